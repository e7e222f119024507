package netns

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestDoSwitchesAndRestores(t *testing.T) {
	testenv.NeedRoot(t, "a network namespace")
	name := fmt.Sprintf("tcnsx%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testenv.Require(t, "ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()

	inode := func() uint64 {
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	var want unix.Stat_t
	if err := unix.Stat(Path(name), &want); err != nil {
		t.Fatal(err)
	}
	before := inode()
	var inside uint64
	if err := Do(name, func() error { inside = inode(); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != want.Ino {
		t.Fatalf("inside Do: netns inode %d, want %d", inside, want.Ino)
	}
	if inside == before {
		t.Fatal("Do did not change namespace")
	}
	if err := Do("does-not-exist-ns", func() error { return nil }); err == nil {
		t.Fatal("Do on a missing namespace: want error")
	}
}

// A name that is a path never reaches the file system: "../../proc/self/ns/net"
// would otherwise resolve to this process's own namespace and be entered.
func TestNameThatIsAPathIsRefused(t *testing.T) {
	called := false
	err := Do("../../proc/self/ns/net", func() error { called = true; return nil })
	if err == nil || called {
		t.Fatalf("Do(path-like name) = %v, fn called %v; want an error and no call", err, called)
	}
	if Exists("../../proc/self/ns/net") {
		t.Error("Exists accepted a path-like name")
	}
}
