package dpdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/coreyield"
	"github.com/taichi-sched/taichi/internal/linuxsched"
	"github.com/taichi-sched/taichi/internal/netns"
	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/testbed"
	"golang.org/x/sys/unix"
)

// The integration tests run the real dpdk-testpmd (Debian package
// dpdk-dev) on a testbed's DP namespace: af_packet vdevs on DPIface (port 0)
// and DPOutIface (port 1), io forwarding, so frames the generator sends to
// DPIface come out at the sink. Frames carry a local experimental EtherType,
// so only this test's frames are counted.

const (
	testEtherType = 0x88b5
	frameLen      = 64
)

var (
	frameMagic    = []byte("TCDPDK01")
	regexpDefault = regexp.MustCompile(DefaultThreadPattern)
	regexpAll     = regexp.MustCompile(".")
)

// testpmdEnv is one testbed plus the names a testpmd run there uses.
type testpmdEnv struct {
	tb     *testbed.Testbed
	prefix string // EAL --file-prefix
	log    string // testpmd's output, shown when a test fails
}

func setupTestpmd(t testing.TB) *testpmdEnv {
	t.Helper()
	testenv.NeedRoot(t, "network namespaces, af_packet, SCHED_FIFO")
	if runtime.NumCPU() < 2 {
		testenv.Require(t, "needs CPU 1 as the DP core")
	}
	testenv.NeedTool(t, "dpdk-testpmd", "dpdk-dev")
	pid := os.Getpid()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("tpmd%d", pid)})
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if err := tb.Down(); err != nil {
			t.Errorf("testbed down: %v", err)
		}
	})
	env := &testpmdEnv{tb: tb, prefix: fmt.Sprintf("taichi-test-%d", pid), log: filepath.Join(t.TempDir(), "testpmd.log")}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := os.ReadFile(env.log); err == nil {
				t.Logf("testpmd output (tail):\n%s", tail(out, 3000))
			}
		}
		if err := RemoveRuntimeDir(env.prefix); err != nil {
			t.Error(err)
		}
	})
	return env
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// args is the testpmd command line: no hugepages, no PCI, two af_packet
// ports, lcore 0 main (CP core) and lcore 1 the worker (DP core), io
// forwarding started at once; --stats-period keeps it running without a
// terminal (without it, testpmd waits for Enter on stdin and /dev/null
// ends it at once).
func (e *testpmdEnv) args() []string {
	return []string{"dpdk-testpmd", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", e.prefix,
		"--vdev=net_af_packet0,iface=" + e.tb.DPIface, "--vdev=net_af_packet1,iface=" + e.tb.DPOutIface,
		"-l", "0,1", "--", "--forward-mode=io", "--total-num-mbufs=8192", "-a", "--stats-period", "1"}
}

// waitForwarding waits until testpmd prints its first periodic statistics,
// which it does only once forwarding has started (the lcore threads exist
// earlier, while the ports are still being configured).
func (e *testpmdEnv) waitForwarding(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(25 * time.Second)
	for {
		out, _ := os.ReadFile(e.log)
		if bytes.Contains(out, []byte("Port statistics")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testpmd did not start forwarding within 25s:\n%s", tail(out, 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLcores waits until pid has at least n threads matching the default
// pattern (EAL creates them during initialisation).
func waitLcores(t testing.TB, pid, n int) []linuxsched.Thread {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ts, err := listThreads(pid, regexpDefault)
		if err == nil && len(ts) >= n {
			return ts
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d lcore threads in pid %d after 15s (%v, %v)", n, pid, ts, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// frameIO sends test frames into the generator side and counts them at the sink.
type frameIO struct {
	tx, rx   int
	txIfidx  int
	dst, src net.HardwareAddr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func packetSocket(t testing.TB, ns, iface string) (fd, ifindex int) {
	t.Helper()
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(testEtherType)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: ifindex})
	})
	if err != nil {
		t.Fatalf("packet socket on %s/%s: %v", ns, iface, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, ifindex
}

func newFrameIO(t testing.TB, tb *testbed.Testbed) *frameIO {
	f := &frameIO{dst: tb.DPMAC, src: tb.GenMAC}
	f.rx, _ = packetSocket(t, tb.SinkNS, tb.SinkIface)
	f.tx, f.txIfidx = packetSocket(t, tb.GenNS, tb.GenIface)
	// Room for every frame of a test even when the reader is slow (-race).
	if err := unix.SetsockoptInt(f.rx, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((20 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(f.rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return f
}

// monoNow reads the monotonic clock through the vDSO (time.Since keeps the
// monotonic reading); every stamp is taken in this process.
func monoNow() int64 { return int64(time.Since(epoch)) }

var epoch = time.Now()

// send transmits one frame carrying seq and the send time.
func (f *frameIO) send(seq uint32) error {
	var b [frameLen]byte
	copy(b[0:6], f.dst)
	copy(b[6:12], f.src)
	binary.BigEndian.PutUint16(b[12:14], testEtherType)
	copy(b[14:22], frameMagic)
	binary.BigEndian.PutUint32(b[22:26], seq)
	binary.BigEndian.PutUint64(b[26:34], uint64(monoNow()))
	return unix.Sendto(f.tx, b[:], 0, &unix.SockaddrLinklayer{Ifindex: f.txIfidx, Protocol: htons(testEtherType), Halen: 6})
}

// recv returns the next test frame's seq and one-way latency through the
// forwarder, or ok=false after the socket timeout.
func (f *frameIO) recv() (seq uint32, lat time.Duration, ok bool, err error) {
	var b [2048]byte
	for {
		n, _, err := unix.Recvfrom(f.rx, b[:], 0)
		now := monoNow()
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				return 0, 0, false, nil
			}
			return 0, 0, false, err
		}
		if n < 34 || !bytes.Equal(b[14:22], frameMagic) {
			continue
		}
		return binary.BigEndian.Uint32(b[22:26]), time.Duration(now - int64(binary.BigEndian.Uint64(b[26:34]))), true, nil
	}
}

// sendBatch sends seqs [first, first+n) from a thread on CPU 0, the CP
// core.
func (f *frameIO) sendBatch(first uint32, n int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with its changed affinity
		_ = linuxsched.Pin(0, 0)
		for i := range n {
			if err := f.send(first + uint32(i)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	return <-errc
}

// sendAndCount sends n frames in batches of 64 and returns how many
// distinct ones reached the sink. Each batch is awaited before the next is
// sent, so the af_packet ring (512 frames) never overflows even while the
// lcore is stalled: on this machine a SCHED_FIFO busy-poller is preempted
// for up to ~50 ms per second when fair tasks wait on its core (RT
// throttling / the fair server), which a test must not count as loss.
func (f *frameIO) sendAndCount(t testing.TB, first uint32, n int) int {
	t.Helper()
	const batch = 64
	seen := map[uint32]bool{}
	for off := 0; off < n; off += batch {
		k := min(batch, n-off)
		lo := first + uint32(off)
		if err := f.sendBatch(lo, k); err != nil {
			t.Fatalf("send: %v", err)
		}
		got := 0
		deadline := time.Now().Add(2 * time.Second)
		for got < k && time.Now().Before(deadline) {
			seq, _, ok, err := f.recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			if ok && seq >= lo && seq < lo+uint32(k) && !seen[seq] {
				seen[seq] = true
				got++
			}
		}
		if got < k {
			break // lost frames: report what arrived
		}
	}
	return len(seen)
}

func startTestpmd(t testing.TB, env *testpmdEnv) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(env.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", env.tb.DPNS}, env.args()...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd
}

func assertLcorePlacement(t testing.TB, pid int, lcores []int, cpu int, policy uint32, prio uint32) {
	t.Helper()
	for _, tid := range lcores {
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatalf("sched_getattr %d: %v", tid, err)
		}
		aff, err := linuxsched.Affinity(tid)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(aff, []int{cpu}) || attr.Policy != policy || attr.Priority != prio {
			t.Fatalf("lcore tid %d: CPUs %v %s/%d, want [%d] %s/%d", tid, aff, PolicyName(attr.Policy), attr.Priority, cpu, PolicyName(policy), prio)
		}
	}
}

func TestTestpmdAdopted(t *testing.T) {
	env := setupTestpmd(t)
	cmd := startTestpmd(t, env)
	pid := cmd.Process.Pid
	lcores := waitLcores(t, pid, 1)
	env.waitForwarding(t)

	const prio = 10
	m, err := New(Config{Name: "testpmd", PID: pid, CPUs: []int{1}, Priority: prio})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() }) // adopted: releases the lcore, removes the groups
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	if len(st.Threads) != len(lcores) || len(st.Threads) != 1 {
		t.Fatalf("status threads %+v, lcores found %+v", st.Threads, lcores)
	}
	ts := st.Threads[0]
	if !ts.Pinned || ts.CPU != 1 || ts.Policy != "SCHED_FIFO" || ts.Priority != prio || !slices.Equal(ts.Affinity, []int{1}) {
		t.Fatalf("status %+v", ts)
	}
	tid := ts.TID
	assertLcorePlacement(t, pid, []int{tid}, 1, unix.SCHED_FIFO, prio)

	// Nothing but the lcore was made real-time (the main lcore stays on the CP core).
	all, err := listThreads(pid, regexpAll)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range all {
		if th.TID != tid && th.Class.Policy != unix.SCHED_NORMAL {
			t.Fatalf("non-lcore thread %s (%d) is %s", th.Comm, th.TID, th.Class)
		}
	}

	io := newFrameIO(t, env.tb)
	const n = 1000
	if got := io.sendAndCount(t, 0, n); got != n {
		t.Fatalf("SCHED_FIFO lcore forwarded %d of %d frames", got, n)
	}

	if err := m.Demote(tid); err != nil {
		t.Fatal(err)
	}
	assertState(t, m, tid, 1, coreyield.Lent)
	if got := io.sendAndCount(t, n, 200); got != 200 {
		t.Fatalf("demoted lcore forwarded %d of 200 frames", got)
	}
	if err := m.Promote(tid); err != nil {
		t.Fatal(err)
	}
	assertLcorePlacement(t, pid, []int{tid}, 1, unix.SCHED_FIFO, prio)
	if got := io.sendAndCount(t, n+200, 200); got != 200 {
		t.Fatalf("promoted lcore forwarded %d of 200 frames", got)
	}

	// Someone moves the lcore: the next reconcile puts it back.
	if err := linuxsched.Pin(tid, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	assertLcorePlacement(t, pid, []int{tid}, 1, unix.SCHED_FIFO, prio)
	if m.Status().Reapplied == 0 {
		t.Fatal("re-application not counted")
	}
}

func TestTestpmdLaunchedWithIdleLending(t *testing.T) {
	env := setupTestpmd(t)
	const prio = 10
	logf, err := os.Create(env.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	m, err := New(Config{
		Name: "testpmd", Command: env.args(), NetNS: env.tb.DPNS, CPUs: []int{1}, Priority: prio,
		ReconcileInterval: 100 * time.Millisecond, StopTimeout: 3 * time.Second,
		IdleDemote:   true, // interfaces from the --vdev arguments
		IdleInterval: time.Millisecond, IdleAfter: 20,
	}, WithOutput(logf))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = m.Stop()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(ctx) }()

	pid := m.PID()
	lcores := waitLcores(t, pid, 1)
	tid := lcores[0].TID
	env.waitForwarding(t)
	waitFor(t, "the idle lcore to be demoted", func() bool {
		ok, _ := inState(m, tid, 1, coreyield.Lent)
		return ok
	})
	st := m.Status()
	if st.Idle == nil || st.Idle.Demotions == 0 || len(st.Threads) != 1 || !st.Threads[0].Demoted {
		t.Fatalf("status while lent: %+v idle %+v", st, st.Idle)
	}

	io := newFrameIO(t, env.tb)
	before := m.Status().Idle.Promotions
	if got := io.sendAndCount(t, 0, 500); got != 500 {
		t.Fatalf("forwarded %d of 500 frames across lend/reclaim", got)
	}
	if after := m.Status().Idle.Promotions; after <= before {
		t.Fatalf("traffic did not reclaim the lcore (promotions %d -> %d)", before, after)
	}

	cancel()
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertLcorePlacement(t, pid, []int{tid}, 1, unix.SCHED_FIFO, prio) // Run reclaims on exit

	stopped = true
	if err := m.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-m.Exited():
	default:
		t.Fatal("Stop returned with testpmd still running")
	}
	if _, err := os.Stat(RuntimeDir(env.prefix)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("EAL runtime dir %s left behind: %v", RuntimeDir(env.prefix), err)
	}
}
