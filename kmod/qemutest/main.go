// Command qemutest exercises taichi.ko end to end inside a throwaway qemu
// VM (scripts/kmod-qemu-test.sh packs it, statically linked, into the
// initramfs): registration rules, kick->wake from CPU 0 to a SCHED_FIFO DP
// thread on CPU 1, timeouts, poll, cleanup on thread exit and on close, a
// real blocker from the test-only hold path, and bad ioctl arguments.
//
//	qemutest run [KFUNC.o]  all checks; prints HIST/LAT/BLOCKER lines and
//	                    "QEMUTEST OK" or "QEMUTEST FAILED"; with the XDP
//	                    object (kmod/bpf/kick.bpf.c) also the BPF kfunc kick
//	qemutest hold-open  register a DP thread on CPU 1 and keep the fd open
//	                    (the VM script checks rmmod refuses, then kills it)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/taichi-sched/taichi/kmod"
)

const (
	cpCPU = 0 // kicker (the CP core)
	dpCPU = 1 // the DP core
)

var failures int

// noPreemptCountEnv is set to 1 by scripts/kmod-guest.sh when the kernel
// was built without CONFIG_PREEMPT_COUNT (read from its headers' .config).
const noPreemptCountEnv = "QEMUTEST_NO_PREEMPT_COUNT"

func failf(format string, args ...any) {
	failures++
	fmt.Printf("FAIL: "+format+"\n", args...)
}

func logf(format string, args ...any) { fmt.Printf("qemutest: "+format+"\n", args...) }

func main() {
	mode := "run"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "run":
		kfuncObj := ""
		if len(os.Args) > 2 {
			kfuncObj = os.Args[2]
		}
		run(kfuncObj)
	case "hold-open":
		holdOpen()
	default:
		fmt.Fprintln(os.Stderr, "usage: qemutest run|hold-open")
		os.Exit(2)
	}
}

func run(kfuncObj string) {
	if err := pin(cpCPU); err != nil {
		failf("%v", err)
		finish()
	}
	d, err := kmod.Open()
	if err != nil {
		failf("open: %v", err)
		finish()
	}
	defer d.Close()
	info, err := d.Info()
	if err != nil {
		failf("info: %v", err)
		finish()
	}
	logf("info %+v", info)
	if info.NrCPUs < 2 {
		failf("need 2 CPUs, module sees %d", info.NrCPUs)
		finish()
	}
	if !info.TestHold {
		failf("module not loaded with test_hold=1")
	}

	badArgs(d)
	registerRules(d)
	wakes(d)
	pollPath()
	if kfuncObj != "" {
		kfuncKick(d, info, kfuncObj)
	} else {
		logf("kfunc check skipped: no BPF object given (module built without BTF)")
	}
	blocker(d)
	exitCleanup(d)
	closeCleanup(d)
	report(d)
	// After the report, so its TCG-skewed latencies stay out of it.
	concurrentKicks(d, info)
	// Leave one record for the CLI check that follows in the VM (the
	// concurrent kicks above may have filled the ring with others).
	if b := produceBlocker(d); b != nil {
		logf("left blocker seq %d for the CLI", b.Seq)
	}
	finish()
}

func finish() {
	if failures > 0 {
		fmt.Printf("QEMUTEST FAILED (%d failures)\n", failures)
		os.Exit(1)
	}
	fmt.Println("QEMUTEST OK")
	os.Exit(0)
}

func report(d *kmod.Device) {
	st, err := d.Stats(dpCPU)
	if err != nil {
		failf("stats: %v", err)
		return
	}
	out, _ := json.Marshal(st)
	fmt.Printf("STATS %s\n", out)
	printHist("all", st.Latency)
}

func printHist(label string, h kmod.Histogram) {
	fmt.Printf("LAT %s: count=%d mean=%v p50<=%v p90<=%v p99<=%v max(all)=%v\n", label, h.Count, h.Mean(),
		h.Quantile(0.5), h.Quantile(0.9), h.Quantile(0.99), time.Duration(h.MaxNs))
	for i, n := range h.Buckets {
		if n == 0 {
			continue
		}
		lo, hi := kmod.BucketBounds(i)
		fmt.Printf("HIST %s [%v, %v) %d\n", label, lo, hi, n)
	}
}

// holdOpen keeps a DP thread registered with the fd open until killed.
func holdOpen() {
	d, err := kmod.Open()
	if err != nil {
		fmt.Println("hold-open:", err)
		os.Exit(1)
	}
	done := thread(dpCPU, false, func() error {
		if _, err := d.Register(); err != nil {
			return err
		}
		fmt.Println("HOLDING")
		for {
			if _, err := d.Wait(time.Second); err != nil {
				return err
			}
		}
	})
	err = <-done
	fmt.Println("hold-open:", err)
	os.Exit(1)
}
