package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// gateScript holds a new process at a pipe until its pid has been placed,
// then execs the real program in the same process: the program and every
// child it forks start inside the CP pool, on any cgroup version.
const gateScript = `read go <&3 || exit 125; exec 3<&-; exec "$0" "$@"`

// Exec runs argv as a CP process (placed in the CP pool when the pipeline
// has a Placer), with stdin as its input, and returns its stdout. A failure
// carries the program's stderr.
func (p *Pipeline) Exec(ctx context.Context, stdin string, argv ...string) (string, error) {
	return p.execEnv(ctx, nil, stdin, argv...)
}

func (p *Pipeline) execEnv(ctx context.Context, env []string, stdin string, argv ...string) (string, error) {
	if p.opts.Placer == nil {
		return run(ctx, nil, env, stdin, argv...)
	}
	return run(ctx, p.opts.Placer, env, stdin, argv...)
}

func runUnplaced(ctx context.Context, stdin string, argv ...string) (string, error) {
	return run(ctx, nil, nil, stdin, argv...)
}

func run(ctx context.Context, placer Placer, env []string, stdin string, argv ...string) (string, error) {
	var cmd *exec.Cmd
	var gateW *os.File
	if placer != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return "", err
		}
		defer r.Close()
		defer w.Close()
		cmd = exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", gateScript}, argv...)...)
		cmd.ExtraFiles = []*os.File{r}
		gateW = w
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	// Own process group: a cancelled run kills helpers' children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", argv[0], err)
	}
	if placer != nil {
		cmd.ExtraFiles[0].Close()
		// The child inherited the spawning thread's CPU affinity, and since
		// Linux 6.2 a cpuset only narrows a task's own (user-requested) mask:
		// a spawner pinned to the CP cores would keep its children off every
		// lent core. Start them unpinned, like a service manager does.
		if err := unix.SchedSetaffinity(cmd.Process.Pid, allCPUs()); err != nil {
			gateW.Close()
			_ = cmd.Wait()
			return "", fmt.Errorf("%s: unpin pid %d before placing it: %w", argv[0], cmd.Process.Pid, err)
		}
		if err := placer.Place(cmd.Process.Pid); err != nil {
			gateW.Close() // the gate sees EOF and exits 125 without running argv
			_ = cmd.Wait()
			return "", fmt.Errorf("%s: place pid %d in CP pool: %w", argv[0], cmd.Process.Pid, err)
		}
		if _, err := gateW.Write([]byte("go\n")); err != nil {
			_ = cmd.Wait()
			return "", fmt.Errorf("%s: open gate: %w", argv[0], err)
		}
		gateW.Close()
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 400 {
			msg = msg[:400] + "..."
		}
		if msg == "" {
			return stdout.String(), fmt.Errorf("%s: %w", strings.Join(shortArgv(argv), " "), err)
		}
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(shortArgv(argv), " "), err, msg)
	}
	return stdout.String(), nil
}

// shortArgv keeps error messages readable when argv is long.
func shortArgv(argv []string) []string {
	if len(argv) > 6 {
		return append(append([]string(nil), argv[:6]...), "...")
	}
	return argv
}

// RunPlaced runs argv as a CP process that placer puts into the CP pool
// before it starts (nil placer: not placed), until it exits or ctx ends; a
// cancelled ctx kills its whole process group. Benchmarks use it for CP
// load generators such as stress-ng.
func RunPlaced(ctx context.Context, placer Placer, env []string, argv ...string) (string, error) {
	return run(ctx, placer, env, "", argv...)
}

// allCPUs is a mask of every CPU id the kernel could have; it intersects
// that with what is possible and allowed.
func allCPUs() *unix.CPUSet {
	var set unix.CPUSet
	for i := 0; i < len(set)*64; i++ {
		set.Set(i)
	}
	return &set
}
