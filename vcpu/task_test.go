package vcpu

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// TestSetPolicyKeepsNice changes the policy of a thread of its own through
// sched_setattr and back, without privileges (SCHED_NORMAL <-> SCHED_BATCH
// at a raised nice value), so the sched_attr round trip also runs as arm64
// under qemu-user: policy and nice must come back as written.
func TestSetPolicyKeepsNice(t *testing.T) {
	type result struct {
		batch, normal *unix.SchedAttr
		err           error
	}
	done := make(chan result)
	go func() {
		// The thread stays locked: it exits with the goroutine, and its
		// changed nice value with it.
		runtime.LockOSThread()
		var r result
		defer func() { done <- r }()
		tid := unix.Gettid()
		if r.err = unix.Setpriority(unix.PRIO_PROCESS, tid, 7); r.err != nil {
			return
		}
		if r.err = setPolicy(tid, unix.SCHED_BATCH); r.err != nil {
			return
		}
		if r.batch, r.err = unix.SchedGetAttr(tid, 0); r.err != nil {
			return
		}
		if r.err = setPolicy(tid, unix.SCHED_NORMAL); r.err != nil {
			return
		}
		r.normal, r.err = unix.SchedGetAttr(tid, 0)
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.batch.Policy != unix.SCHED_BATCH || r.batch.Nice != 7 {
		t.Errorf("after setPolicy(SCHED_BATCH): policy %d nice %d, want %d and 7", r.batch.Policy, r.batch.Nice, unix.SCHED_BATCH)
	}
	if r.normal.Policy != unix.SCHED_NORMAL || r.normal.Nice != 7 {
		t.Errorf("after setPolicy(SCHED_NORMAL): policy %d nice %d, want %d and 7", r.normal.Policy, r.normal.Nice, unix.SCHED_NORMAL)
	}
}

// TestExitingProcessIsGone: a process whose threads are all gone while
// its leader is still listed (it is exiting) reads as gone, so a release
// or adoption pass skips it instead of failing.
func TestExitingProcessIsGone(t *testing.T) {
	root := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("745/status", "Name:\tstorm\nTgid:\t745\nPid:\t745\n")
	write("745/stat", "745 (storm) Z 1 745 745 0 -1 4194316 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
	if err := os.MkdirAll(filepath.Join(root, "745/task/745"), 0o755); err != nil { // listed, its stat gone
		t.Fatal(err)
	}
	fs, err := procfs.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = inspectProcess(fs, 745)
	if err == nil || !isGone(err) {
		t.Fatalf("inspect an exiting process: %v, want an error isGone accepts", err)
	}
}
