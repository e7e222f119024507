package vcpu_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"regexp"

	"github.com/taichi-sched/taichi/vcpu"
)

// A CP pool on CPU 0 that may borrow DP core 1: adopt the CP processes,
// lend the DP core while its loop is idle, take it back when packets come.
// Needs root and cgroups, so it has no checked output.
func Example() {
	pool, err := vcpu.NewCgroup(vcpu.Options{
		Name:    "example.cp",
		CPCores: []int{0},
		DPCores: []int{1},
		Class:   vcpu.ClassIdle,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := pool.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer pool.Destroy()

	pids, err := vcpu.Scan(vcpu.Selector{Commands: []*regexp.Regexp{regexp.MustCompile(`^ovs-`)}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Adopt(append(pids, os.Getpid())); err != nil {
		log.Print(err) // *vcpu.SkipError values name what was refused
	}
	if err := pool.Lend(1); err != nil { // the DP loop on core 1 went idle
		log.Fatal(err)
	}
	fmt.Println("CP runs on", pool.CPUs())
	if err := pool.Reclaim(1); err != nil { // packets: CP leaves core 1
		log.Fatal(err)
	}
	fmt.Println("CP runs on", pool.CPUs())
}

// Selectors are checked before any process is looked at.
func ExampleSelector_Validate() {
	sel := vcpu.Selector{
		Units:   []string{"ovs-vswitchd.service", "system.slice/ssh"},
		Cgroups: []string{"/docker/abc", "docker/../x"},
	}
	fmt.Println(sel.Validate())
	// Output:
	// units[1]: "system.slice/ssh" is not a unit or slice name
	// cgroups[1]: "docker/../x" is not a clean absolute cgroup path
}
