package eval

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/controlplane"
)

// CP loads for the dataplane experiment. Real CP is part user-mode (agents
// and helpers in Python and Go) and part kernel-heavy (netlink, mounts,
// mmap): a user-mode CP task is preempted at once when the DP loop wakes,
// a kernel-heavy one only at its next preemption point.
const (
	CPLoadKernel = "kernel" // stress-ng's dentry storm + an mmap/munmap storm
	CPLoadUser   = "user"   // Go and Python busy helpers
	CPLoadMixed  = "mixed"  // one of each kind of kernel-heavy and user-mode work
)

// CPLoads are the CP load names, the default first.
var CPLoads = []string{CPLoadMixed, CPLoadKernel, CPLoadUser}

// cpLoadCommands returns a CP load's description and its command lines,
// each bounded by bound (and killed when the run ends).
func cpLoadCommands(kind string, env *Env, stressDir string, bound time.Duration) (string, [][]string, error) {
	secs := strconv.Itoa(int(bound.Seconds()) + 1)
	dentry := func(workers int) []string {
		return []string{"stress-ng", "--dentry", strconv.Itoa(workers), "--temp-path", stressDir, "--timeout", secs + "s", "--quiet"}
	}
	helper := func(args ...string) []string { return append(append([]string(nil), env.GoHelper...), args...) }
	mmap := helper("mmap", "128", "1000000")
	goSpin := helper("spin", "1000000")
	pySpin := []string{"python3", "-c", "import time\nend = time.time() + " + secs + "\nx = 0\nwhile time.time() < end:\n    x += 1\n"}
	switch kind {
	case CPLoadKernel:
		return "kernel: stress-ng --dentry 2 + mmap storm", [][]string{dentry(2), mmap}, nil
	case CPLoadUser:
		return "user: Go + Python busy helpers", [][]string{goSpin, pySpin}, nil
	case CPLoadMixed, "":
		return "mixed: stress-ng --dentry 1 + mmap storm + Go + Python busy helpers", [][]string{dentry(1), mmap, goSpin, pySpin}, nil
	}
	return "", nil, fmt.Errorf("cp-load: unknown %q (want %s, %s or %s)", kind, CPLoadMixed, CPLoadKernel, CPLoadUser)
}

// cpLoad is a running backlogged CP workload, every process placed in the
// CP pool before it runs.
type cpLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []string
	dir    string
}

// startCPLoad starts kind's processes; stop ends them and reports any that
// could not be placed or that ended before the run did.
func startCPLoad(ctx context.Context, env *Env, kind string, bound time.Duration) (*cpLoad, string, error) {
	dir, err := os.MkdirTemp("", "taichi-stress-") // stress-ng's dentry storm works in a directory of ours
	if err != nil {
		return nil, "", err
	}
	name, cmds, err := cpLoadCommands(kind, env, dir, bound)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	lctx, cancel := context.WithTimeout(ctx, bound)
	l := &cpLoad{cancel: cancel, dir: dir}
	for _, argv := range cmds {
		l.wg.Add(1)
		go func(argv []string) {
			defer l.wg.Done()
			_, err := controlplane.RunPlaced(lctx, controlplane.PlacerFunc(env.System.Place), env.GoHelperEnv, argv...)
			if lctx.Err() != nil {
				return // ended by the run's end: its exit status says nothing
			}
			if err == nil {
				err = fmt.Errorf("exited early")
			}
			l.mu.Lock()
			l.errs = append(l.errs, fmt.Sprintf("%s: %v", argv[0], err))
			l.mu.Unlock()
		}(argv)
	}
	return l, name, nil
}

// stop ends the load and returns what went wrong while it ran.
func (l *cpLoad) stop() []string {
	l.cancel() // processes ended by this are not failures (lctx.Err is set)
	l.wg.Wait()
	os.RemoveAll(l.dir)
	return l.errs
}
