package vcpu

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
)

func TestParseStatIdentity(t *testing.T) {
	line := "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 300 0 0 0 7 3 0 0 20 0 1 0 987654321 12345 67 18446744073709551615\n"
	comm, flags, start, err := parseStatIdentity([]byte(line))
	if err != nil || string(comm) != "a) (b c)" || flags != 4194560 || start != 987654321 {
		t.Fatalf("= %q %d %d %v", comm, flags, start, err)
	}
	for _, bad := range []string{"4242 a S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 1 1 0 -1 4x 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0"} {
		if _, _, _, err := parseStatIdentity([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// fakeProc is a /proc tree a test controls: per pid, a stat line (name,
// flags, start time) and a command line.
type fakeProc struct {
	t    *testing.T
	root string
}

func (f fakeProc) set(pid int, comm string, flags, start uint64, argv0 string) {
	f.t.Helper()
	dir := filepath.Join(f.root, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 %d 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", pid, comm, pid, pid, flags, start)
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(argv0+"\x00--flag\x00"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f fakeProc) setArgv0(pid int, argv0 string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.root, fmt.Sprint(pid), "cmdline"), []byte(argv0+"\x00"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// Between full passes a Scanner reads a process's command line again when
// the process is new, its name changed (an exec) or its pid was reused;
// an argv[0] rewritten under the same name shows at the next full pass.
// Kernel threads and the scanning process are never listed.
func TestScannerRereadsCommandLineOnExec(t *testing.T) {
	proc := fakeProc{t, t.TempDir()}
	const self = 10
	proc.set(self, "agent", 0, 1, "/usr/bin/vm-agent")
	proc.set(2, "kthreadd", pfKthread, 1, "")
	proc.set(20, "sh", 0, 100, "/bin/sh")       // a wrapper, execs the agent later
	proc.set(30, "python3", 0, 200, "vm-agent") // an agent by argv[0]
	proc.set(40, "bash", 0, 300, "bash")        // rewrites its argv[0] later
	s, err := newScanner(Selector{Commands: []*regexp.Regexp{regexp.MustCompile(`^vm-agent$`), regexp.MustCompile(`^kthreadd$`)}}, proc.root, self)
	if err != nil {
		t.Fatal(err)
	}
	s.fullEvery = 4
	pass := func(want ...int) {
		t.Helper()
		got, err := s.Scan()
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("pass %d: %v, %v; want %v", s.passes, got, err, want)
		}
	}
	pass(30) // full
	proc.set(20, "vm-agent", 0, 100, "/opt/vm-agent")
	proc.setArgv0(40, "vm-agent")
	pass(20, 30)                                 // the exec is seen; the rewrite is not yet
	proc.set(50, "vm-agent", 0, 400, "vm-agent") // a new process
	proc.set(30, "python3", 0, 500, "python3")   // pid 30 exited, reused
	pass(20, 50)
	pass(20, 50)
	pass(20, 40, 50) // full: the rewrite too
	if _, ok := s.known[2]; ok || len(s.known) != 4 {
		t.Errorf("kept %v; want pids 20 30 40 50 only", s.known)
	}
	if err := os.RemoveAll(filepath.Join(proc.root, "50")); err != nil {
		t.Fatal(err)
	}
	pass(20, 40)
	if _, ok := s.known[50]; ok {
		t.Error("an exited process is still kept")
	}
}

// A real process that the scanner saw before it exec'd the CP command (a
// wrapper script's exec, a fork caught before its exec) is listed by the
// next pass, not the next full one; so is a process started after a pass.
func TestScannerFindsExecAndNewProcess(t *testing.T) {
	testenv.SkipIfEmulated(t, "the kernel's view of an exec'd process (under qemu-user its command line is the emulator's)")
	name := uniqueName(t)
	bin := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	wrapper := testenv.Command(os.Args[0], "-test.run=^$")
	wrapper.Env = append(os.Environ(), helperEnv+"=exec-on-input", execAsEnv+"="+bin)
	in, err := wrapper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := wrapper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wrapper.Process.Kill(); wrapper.Wait() })
	pid := wrapper.Process.Pid
	s, err := NewScanner(Selector{Commands: []*regexp.Regexp{byName(name)}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the full first pass, then one that keeps what it saw
		if got, err := s.Scan(); err != nil || len(got) != 0 {
			t.Fatalf("before the exec: %v, %v", got, err)
		}
		if _, ok := s.known[pid]; !ok {
			t.Fatalf("the wrapper %d was not scanned", pid)
		}
	}
	in.Write([]byte("go\n"))
	waitForArgv0(t, pid, bin)
	if got, err := s.Scan(); err != nil || !slices.Equal(got, []int{pid}) {
		t.Fatalf("after the exec, pass %d: %v, %v; want [%d]", s.passes, got, err, pid)
	}
	child := startChild(t, name, "sleep")
	if got, err := s.Scan(); err != nil || !slices.Equal(got, []int{pid, child}) {
		t.Fatalf("a new process, pass %d: %v, %v; want [%d %d]", s.passes, got, err, pid, child)
	}
	if s.passes > s.fullEvery {
		t.Fatalf("%d passes with a full one every %d: the cache went untested", s.passes, s.fullEvery)
	}
}

// execAsEnv names the file the exec-on-input helper execs (as argv[0]).
const execAsEnv = "TAICHI_VCPU_TEST_EXEC_AS"

// execOnInput waits for a line on stdin, then execs the file execAsEnv
// names as the "sleep" helper: a wrapper that becomes the CP command.
func execOnInput() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	path := os.Getenv(execAsEnv)
	env := []string{helperEnv + "=sleep"} // syscall.Exec keeps duplicates: the first would win
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, helperEnv+"=") {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(path, []string{path, "-test.run=^$"}, env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(4)
}

// BenchmarkRescan: one adoption rescan pass over this machine's /proc by
// a fresh Scan (what the daemon did every pass) and by a Scanner between
// its full passes. cpu-ns/op is the process's CPU time (user+system) per
// pass: on a shared machine it moves less than the wall time.
func BenchmarkRescan(b *testing.B) {
	sel := Selector{Commands: []*regexp.Regexp{regexp.MustCompile(`^ab-busy$`)}}
	b.Run("scan", func(b *testing.B) {
		benchCPU(b, func() error { _, err := Scan(sel); return err })
	})
	b.Run("scanner", func(b *testing.B) {
		s, err := NewScanner(sel)
		if err != nil {
			b.Fatal(err)
		}
		benchCPU(b, func() error { _, err := s.Scan(); return err })
	})
}

func benchCPU(b *testing.B, pass func() error) {
	b.ReportAllocs()
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	for b.Loop() {
		if err := pass(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
}
