package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
)

// Core states shared with the XDP program (probe/bpf/probe.c).
const (
	coreActive = 0
	coreArmed  = 1
	coreFired  = 2
	coreLost   = 3
)

// Sizes of the map values, checked against the bpf2go types at build time.
const (
	queueCounterSize = 16
	coreStateSize    = 24
)

var (
	_ [queueCounterSize - unsafe.Sizeof(probeQueueCounter{})]struct{}
	_ [unsafe.Sizeof(probeQueueCounter{}) - queueCounterSize]struct{}
	_ [coreStateSize - unsafe.Sizeof(probeCoreState{})]struct{}
	_ [unsafe.Sizeof(probeCoreState{}) - coreStateSize]struct{}
	_ [EventSize - unsafe.Sizeof(probeEvent{})]struct{}
	_ [unsafe.Sizeof(probeEvent{}) - EventSize]struct{}
)

// XDP is the eBPF probe: an XDP program at the RX hook of Options.Iface.
type XDP struct {
	opts Options

	mu       sync.Mutex
	started  bool
	objs     probeObjects
	lnk      link.Link
	pinPath  string
	mode     string
	ifindex  int
	lockFD   int         // flock'ed lock file of this interface; -1 when not held
	counters *mmapRegion // queue_counters
	states   *mmapRegion // core_states
	wakes    map[int]*XDPWakeSource
}

// NewXDP validates opts and returns an unstarted XDP probe.
func NewXDP(opts Options) (*XDP, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinDir
	}
	if opts.LockDir == "" {
		opts.LockDir = DefaultLockDir
	}
	if opts.TagOffset == 0 {
		opts.TagOffset = DefaultTagOffset
	}
	return &XDP{opts: opts, lockFD: -1}, nil
}

// Start loads the program, creates a ring buffer per DP core and attaches
// (native, else generic) in the interface's namespace. A link pinned by an
// earlier run that died without Stop is updated to the new program instead
// of attaching a second one. On error nothing stays loaded or attached.
func (x *XDP) Start(ctx context.Context) (err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.started {
		return errors.New("xdp probe: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			x.releaseLocked()
		}
	}()

	// A pinned link is either a crashed run's (replace it) or a live
	// process's (leave it alone): the live one holds this lock.
	if x.lockFD, err = lockInterface(x.opts.LockDir, filepath.Base(x.pinBase())); err != nil {
		return fmt.Errorf("xdp probe on %s: %w", x.where(), err)
	}
	spec, err := loadProbe()
	if err != nil {
		return fmt.Errorf("xdp probe: %w", err)
	}
	if err := spec.Variables[probeVarTagOffset].Set(uint32(x.opts.TagOffset)); err != nil {
		return fmt.Errorf("xdp probe: tag_offset: %w", err)
	}
	// The rings' size, template included: the C default is one 4 KiB page,
	// which a 64 KiB-page kernel refuses.
	inner := spec.Maps[probeMapCoreRings].InnerMap
	if inner == nil {
		return fmt.Errorf("xdp probe: %s has no inner map spec", probeMapCoreRings)
	}
	inner.MaxEntries = uint32(x.opts.RingBytes())
	if err := spec.LoadAndAssign(&x.objs, nil); err != nil {
		return fmt.Errorf("xdp probe: load: %w", withVerifierLog(err))
	}
	for slot := 0; slot <= MaxQueues; slot++ {
		if err := x.objs.QueueCore.Put(uint32(slot), uint32(x.opts.coreOf(slot))); err != nil {
			return fmt.Errorf("xdp probe: queue_core[%d]: %w", slot, err)
		}
	}
	if x.counters, err = mmapArray(x.objs.QueueCounters.FD(), queueCounterSize, MaxQueues+1); err != nil {
		return fmt.Errorf("xdp probe: queue_counters: %w", err)
	}
	if x.states, err = mmapArray(x.objs.CoreStates.FD(), coreStateSize, MaxCores); err != nil {
		return fmt.Errorf("xdp probe: core_states: %w", err)
	}
	x.wakes = make(map[int]*XDPWakeSource)
	for _, core := range x.opts.cores() {
		ws, err := newXDPWakeSource(core, inner, x.states)
		if err != nil {
			return fmt.Errorf("xdp probe: core %d: %w", core, err)
		}
		x.wakes[core] = ws
		if err := x.objs.CoreRings.Put(uint32(core), ws.ring); err != nil {
			return fmt.Errorf("xdp probe: core_rings[%d]: %w", core, err)
		}
	}

	if err := ensureBPFFS(x.opts.PinDir); err != nil {
		return fmt.Errorf("xdp probe: %w", err)
	}
	sweepDefunctPins(x.opts.PinDir)
	err = netns.Do(x.opts.NetNS, func() error {
		ifc, err := net.InterfaceByName(x.opts.Iface)
		if err != nil {
			return fmt.Errorf("iface %q: %w", x.opts.Iface, err)
		}
		x.ifindex = ifc.Index
		return x.attach()
	})
	if err != nil {
		return fmt.Errorf("xdp probe on %s: %w", x.where(), err)
	}
	x.started = true
	return nil
}

func (x *XDP) where() string {
	if x.opts.NetNS == "" {
		return x.opts.Iface
	}
	return x.opts.NetNS + "/" + x.opts.Iface
}

// pinBase is the pin path without its mode suffix. bpffs forbids dots in
// names, so they become underscores.
func (x *XDP) pinBase() string {
	ns := x.opts.NetNS
	if ns == "" {
		ns = "host"
	}
	name := strings.NewReplacer(".", "_", "/", "_").Replace("xdp-" + ns + "-" + x.opts.Iface)
	return filepath.Join(x.opts.PinDir, name)
}

// attach runs inside the interface's namespace.
func (x *XDP) attach() error {
	base := x.pinBase()
	for _, mode := range []string{"native", "generic"} {
		path := base + "-" + mode
		if x.opts.AttachMode != "" && x.opts.AttachMode != mode {
			// A pin in the other mode cannot be updated into this one.
			if old, err := link.LoadPinnedLink(path, nil); err == nil {
				_ = old.Unpin()
				_ = old.Close()
			}
			continue
		}
		old, err := link.LoadPinnedLink(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			_ = os.Remove(path)
			continue
		}
		if sameXDPTarget(old, x.ifindex) {
			if err := old.Update(x.objs.TaichiProbe); err == nil {
				x.lnk, x.pinPath, x.mode = old, path, mode+" (replaced stale)"
				return nil
			}
		}
		// Stale pin for an interface that is gone or was recreated.
		_ = old.Unpin()
		_ = old.Close()
	}

	var errs []error
	for _, m := range []struct {
		name  string
		flags link.XDPAttachFlags
	}{{"native", link.XDPDriverMode}, {"generic", link.XDPGenericMode}} {
		if x.opts.AttachMode != "" && x.opts.AttachMode != m.name {
			continue
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: x.objs.TaichiProbe, Interface: x.ifindex, Flags: m.flags})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
			if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("attach: another XDP program is attached outside taichi (%w)", errors.Join(errs...))
			}
			continue
		}
		path := base + "-" + m.name
		if err := l.Pin(path); err != nil {
			_ = l.Close()
			return fmt.Errorf("pin link at %s: %w", path, err)
		}
		x.lnk, x.pinPath, x.mode = l, path, m.name
		return nil
	}
	return fmt.Errorf("attach: %w", errors.Join(errs...))
}

// sweepDefunctPins removes pinned links whose interface is gone (a crashed
// run's namespace was deleted): the kernel detached them, but the pin keeps
// the program and its maps in memory.
func sweepDefunctPins(dir string) {
	paths, _ := filepath.Glob(filepath.Join(dir, "xdp-*"))
	for _, path := range paths {
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			continue
		}
		if info, err := l.Info(); err == nil {
			if xi := info.XDP(); xi != nil && xi.Ifindex == 0 {
				_ = l.Unpin()
			}
		}
		_ = l.Close()
	}
}

func sameXDPTarget(l link.Link, ifindex int) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	xi := info.XDP()
	return xi != nil && int(xi.Ifindex) == ifindex
}

// lockInterface takes an exclusive flock on dir/name.lock and writes our
// pid into it. The kernel drops the lock when the process dies, however it
// dies. Stop removes the file (unlockInterface), so a lock taken on a file
// that was removed meanwhile is retried on the new one.
func lockInterface(dir, name string) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return -1, fmt.Errorf("lock dir: %w", err)
	}
	path := filepath.Join(dir, name+".lock")
	for range 5 {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return -1, fmt.Errorf("lock: %w", err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			holder, _ := os.ReadFile(path)
			unix.Close(fd)
			if errors.Is(err, unix.EWOULDBLOCK) {
				return -1, fmt.Errorf("already probed by a live process (pid %s, lock %s)", strings.TrimSpace(string(holder)), path)
			}
			return -1, fmt.Errorf("lock %s: %w", path, err)
		}
		var held, now unix.Stat_t
		if unix.Fstat(fd, &held) != nil || unix.Stat(path, &now) != nil || held.Ino != now.Ino || held.Dev != now.Dev {
			unix.Close(fd) // locked a file its holder just removed
			continue
		}
		_ = unix.Ftruncate(fd, 0)
		_, _ = unix.Pwrite(fd, []byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		return fd, nil
	}
	return -1, fmt.Errorf("lock %s: keeps being replaced", path)
}

// withVerifierLog puts the whole verifier log into the error text.
func withVerifierLog(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w\nverifier log:\n%+v", err, ve)
	}
	return err
}

// ensureBPFFS makes sure dir is on a bpffs, mounting one at /sys/fs/bpf if
// nothing is mounted there.
func ensureBPFFS(dir string) error {
	const root = "/sys/fs/bpf"
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return fmt.Errorf("bpffs: %w", err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("bpffs: mount at %s: %w", root, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs: %w", err)
	}
	return nil
}

// Stop detaches the program (closing the bpf_link and removing its pin) and
// frees the maps. Idempotent. Wake sources handed out become inert.
func (x *XDP) Stop() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	err := x.releaseLocked()
	x.started = false
	return err
}

func (x *XDP) releaseLocked() error {
	var errs []error
	if x.lnk != nil {
		if err := x.lnk.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin: %w", err))
		}
		if err := x.lnk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
		x.lnk = nil
	}
	for _, ws := range x.wakes {
		if err := ws.close(); err != nil {
			errs = append(errs, err)
		}
	}
	x.wakes = nil
	x.counters, x.states = nil, nil // unmapped by the garbage collector
	if err := x.objs.Close(); err != nil {
		errs = append(errs, err)
	}
	x.objs = probeObjects{}
	x.mode = ""
	if x.lockFD >= 0 {
		// Remove while still holding the lock, then release it.
		_ = os.Remove(filepath.Join(x.opts.LockDir, filepath.Base(x.pinBase())+".lock"))
		unix.Close(x.lockFD)
		x.lockFD = -1
	}
	return errors.Join(errs...)
}

// Mode returns "native" or "generic" (with " (replaced stale)" when Start
// took over a program a crashed run left behind); "" when not started.
func (x *XDP) Mode() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.mode
}

// ProgramID returns the kernel id of the loaded program (0 if not started).
func (x *XDP) ProgramID() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.objs.TaichiProbe == nil {
		return 0
	}
	info, err := x.objs.TaichiProbe.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return int(id)
}

// WakeSource returns the wake source of a DP core named in Options.
func (x *XDP) WakeSource(core int) (WakeSource, error) {
	ws, err := x.XDPWakeSource(core)
	if err != nil {
		return nil, err
	}
	return ws, nil
}

// XDPWakeSource is WakeSource with the concrete type (DisarmEvent, Stats).
func (x *XDP) XDPWakeSource(core int) (*XDPWakeSource, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.started {
		return nil, errors.New("xdp probe: not started")
	}
	ws, ok := x.wakes[core]
	if !ok {
		return nil, fmt.Errorf("xdp probe: core %d has no queue mapped to it", core)
	}
	return ws, nil
}

// Queue returns the packet and byte counters of an RX queue slot with two
// atomic loads (no syscall).
func (x *XDP) Queue(slot int) (packets, bytes uint64) {
	x.mu.Lock()
	m := x.counters
	x.mu.Unlock()
	if m == nil || slot < 0 || slot > MaxQueues {
		return 0, 0
	}
	off := slot * queueCounterSize
	return atomic.LoadUint64(m.word(off)), atomic.LoadUint64(m.word(off + 8))
}

// Stats returns the per-queue counters (queues that saw packets, and every
// queue mapped explicitly) and per-core event counts.
func (x *XDP) Stats() Stats {
	st := Stats{Backend: BackendXDP, Iface: x.opts.Iface, NetNS: x.opts.NetNS, Mode: x.Mode()}
	for slot := 0; slot <= MaxQueues; slot++ {
		p, b := x.Queue(slot)
		if _, mapped := x.opts.Queues[slot]; p == 0 && !mapped {
			continue
		}
		st.Queues = append(st.Queues, QueueStats{Queue: slot, Core: x.opts.coreOf(slot), Packets: p, Bytes: b})
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, core := range x.opts.cores() {
		if ws := x.wakes[core]; ws != nil {
			st.Cores = append(st.Cores, ws.Stats())
		}
	}
	return st
}
