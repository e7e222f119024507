package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/testbed"
)

var bedSeq atomic.Int32

// needRoot skips tests that need root (namespaces, BPF).
func needRoot(t testing.TB) {
	t.Helper()
	testenv.NeedRoot(t, "network namespaces, veth pairs and BPF programs")
	testenv.NeedTool(t, "ip", "iproute2")
	_ = rlimit.RemoveMemlock()
}

// upTestbed builds a private testbed instance removed at cleanup.
func upTestbed(t testing.TB) *testbed.Testbed {
	t.Helper()
	needRoot(t)
	prefix := fmt.Sprintf("tp%d-%d", os.Getpid(), bedSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("testbed up: %v", err)
	}
	t.Cleanup(func() {
		if err := tb.Down(); err != nil {
			t.Errorf("testbed down: %v", err)
		}
	})
	return tb
}

// testPinDir keeps this process's pins apart from the daemon's and from
// other test processes.
func testPinDir(t testing.TB) string {
	dir := fmt.Sprintf("%s/test-%d", DefaultPinDir, os.Getpid())
	t.Cleanup(func() { _ = os.Remove(dir) })
	return dir
}

// testLockDir is the lock directory of this test process's probes.
func testLockDir(t testing.TB) string {
	dir := fmt.Sprintf("%s/test-%d", os.TempDir(), os.Getpid())
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func startXDP(t testing.TB, tb *testbed.Testbed, core int) *XDP {
	t.Helper()
	return startXDPMode(t, tb, core, "")
}

func startXDPMode(t testing.TB, tb *testbed.Testbed, core int, mode string) *XDP {
	t.Helper()
	p, err := NewXDP(Options{Iface: tb.NICIn, NetNS: tb.NICNS, Core: core, PinDir: testPinDir(t), LockDir: testLockDir(t), AttachMode: mode})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

func sender(t testing.TB, tb *testbed.Testbed) *UDPSender {
	t.Helper()
	s, err := DialUDP(tb.GenNS, netip.AddrPortFrom(tb.DPIP, 9999))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// frameLen is the on-wire length of one sender datagram.
const frameLen = 14 + 20 + 8 + PayloadSize

// sendN sends seq first..first+n-1, retrying on a full queue.
func sendN(t testing.TB, s *UDPSender, first uint64, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		for {
			err := s.Send(first + uint64(i))
			if err == nil {
				break
			}
			if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("send: %v", err)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// xdpAttached returns the `ip -d link show` text of iface and whether it
// shows an XDP program.
func xdpAttached(t testing.TB, ns, iface string) (string, bool) {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-d", "link", "show", "dev", iface).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v: %s", err, out)
	}
	s := string(out)
	return s, strings.Contains(s, "prog/xdp") || strings.Contains(s, "xdpgeneric") || strings.Contains(s, " xdp ")
}
