package vcpu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/prometheus/procfs"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"golang.org/x/sys/unix"
)

// Scanner lists the processes a selector matches, pass after pass (the
// daemon's adoption rescan), reading less of /proc than a fresh Scan: each
// pass reads every process's stat (its command name, start time and
// whether it is a kernel thread) into a reused buffer, and its command
// line only when the process is new or its name changed since the last
// pass (an exec: a wrapper that execs the CP command, a fork not yet
// exec'd when last seen). A process that rewrites its argv[0] without
// changing its name is seen at the next full pass, every fullEvery
// passes. Cgroups, which a process can change any time, are read every
// pass when the selector looks at them. Not for concurrent use.
type Scanner struct {
	sel       Selector
	root      string
	fs        procfs.FS
	self      int
	fullEvery int
	passes    int
	// known holds what the last pass read of each process it listed; seen
	// is the pass being built (swapped after it, so both maps are reused).
	known, seen map[int]scanned
	buf         []byte
}

// scanned is what a pass keeps of one process.
type scanned struct {
	start uint64 // clock ticks after boot: a reused pid is another process
	comm  string
	argv0 string
}

// fullEvery: one pass in this many re-reads every command line (30 s at
// the default rescan period of 2 s).
const fullEvery = 15

// NewScanner checks sel and returns a Scanner of the system's /proc.
func NewScanner(sel Selector) (*Scanner, error) {
	return newScanner(sel, "/proc", selfPID())
}

func newScanner(sel Selector, root string, self int) (*Scanner, error) {
	if err := sel.Validate(); err != nil {
		return nil, fmt.Errorf("vcpu: selector: %w", err)
	}
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("vcpu: open %s: %w", root, err)
	}
	return &Scanner{sel: sel, root: root, fs: fs, self: self, fullEvery: fullEvery,
		known: map[int]scanned{}, seen: map[int]scanned{}, buf: make([]byte, 4096)}, nil
}

// Scan lists the user-space processes (thread group ids, sorted) the
// selector matches. Kernel threads and the calling process are never
// listed.
func (s *Scanner) Scan() ([]int, error) {
	dir, err := os.Open(s.root)
	if err != nil {
		return nil, fmt.Errorf("vcpu: list %s: %w", s.root, err)
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return nil, fmt.Errorf("vcpu: list %s: %w", s.root, err)
	}
	full := s.passes%s.fullEvery == 0
	s.passes++
	clear(s.seen)
	var out []int
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 || pid == s.self {
			continue
		}
		info, ok := s.inspect(pid, full)
		if ok && s.sel.matches(info) {
			out = append(out, pid)
		}
	}
	s.known, s.seen = s.seen, s.known
	slices.Sort(out)
	return out, nil
}

// inspect reads what the selector looks at of pid; false for a kernel
// thread or a process that is gone.
func (s *Scanner) inspect(pid int, full bool) (procInfo, bool) {
	stat, err := s.read(pid, "stat")
	if err != nil {
		return procInfo{}, false
	}
	comm, flags, start, err := parseStatIdentity(stat)
	if err != nil || flags&pfKthread != 0 {
		return procInfo{}, false
	}
	prev, ok := s.known[pid]
	cur := prev
	if !ok || full || prev.start != start || prev.comm != string(comm) || prev.argv0 == "" {
		cur = scanned{start: start, comm: string(comm)}
		// Empty while an exec is under way: read again next pass.
		if argv, err := s.read(pid, "cmdline"); err == nil {
			if argv0, _, _ := bytes.Cut(argv, []byte{0}); len(argv0) > 0 {
				cur.argv0 = filepath.Base(string(argv0))
			}
		}
	}
	s.seen[pid] = cur
	info := procInfo{pid: pid, comm: cur.comm, argv0: cur.argv0}
	if len(s.sel.Units) > 0 || len(s.sel.Cgroups) > 0 {
		p, err := s.fs.Proc(pid)
		if err != nil {
			return procInfo{}, false
		}
		if info.cgroups, err = p.Cgroups(); err != nil {
			return procInfo{}, false
		}
	}
	return info, true
}

// read reads /proc/PID/file into the scanner's buffer (valid until the
// next read) with plain syscalls: an os.File would try the network poller
// for every file of every process.
func (s *Scanner) read(pid int, file string) ([]byte, error) {
	path := s.root + "/" + strconv.Itoa(pid) + "/" + file
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for {
		m, err := unix.Read(fd, s.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return s.buf[:n], nil
		}
		if n += m; n == len(s.buf) {
			// Only argv[0] and stat's first 22 fields are looked at.
			return s.buf[:n], nil
		}
	}
}

// parseStatIdentity returns the command name, flags (field 9) and start
// time (field 22) of a /proc/PID/stat line without allocating.
func parseStatIdentity(b []byte) (comm []byte, flags, start uint64, err error) {
	comm, rest, err := linuxsched.SplitStat(b)
	if err != nil {
		return nil, 0, 0, err
	}
	const flagsField, startField = 9, 22
	if flags, err = parseUint(linuxsched.StatField(rest, flagsField)); err != nil {
		return nil, 0, 0, fmt.Errorf("stat: field %d: %w", flagsField, err)
	}
	if start, err = parseUint(linuxsched.StatField(rest, startField)); err != nil {
		return nil, 0, 0, fmt.Errorf("stat: field %d: %w", startField, err)
	}
	return comm, flags, start, nil
}

func parseUint(b []byte) (uint64, error) {
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 || len(b) > 19 { // 19 digits never overflow
		return 0, fmt.Errorf("%q is not a count", b)
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a count", b)
		}
		v = v*10 + uint64(c-'0')
	}
	return v, nil
}
