package testbed

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/netns"
	"github.com/taichi-sched/taichi/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestLayoutRejectsBadPrefix(t *testing.T) {
	for _, p := range []string{"", "-x", "a b", "a/b", strings.Repeat("x", 41)} {
		if _, err := Layout(Options{Prefix: p}); err == nil || !strings.Contains(err.Error(), "prefix") {
			t.Errorf("Layout(%q): err %v, want a prefix error", p, err)
		}
	}
	tb, err := Layout(Options{Prefix: "tb1"})
	if err != nil {
		t.Fatal(err)
	}
	if tb.GenNS != "tb1-gen" || tb.DPNS != "tb1-dp" || tb.NICNS != "tb1-nic" || tb.SinkNS != "tb1-sink" {
		t.Fatalf("namespaces: %+v", tb.Namespaces())
	}
	for _, n := range []string{tb.GenIface, tb.NICIn, tb.NICOut, tb.NICBridge, tb.DPIface, tb.DPOutIface, tb.SinkIface} {
		if len(n) > 15 {
			t.Errorf("interface name %q longer than 15", n)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "network namespaces")
}

func testPrefix(name string) string { return fmt.Sprintf("tb%s%d", name, os.Getpid()%100000) }

func TestUpIdempotentDownClean(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	opts := Options{Prefix: testPrefix("i")}
	t.Cleanup(func() { _ = Down(opts) })

	tb, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !tb.Complete(ctx) {
		t.Fatalf("after Up: %v", tb.State(ctx))
	}
	gen1 := nsInode(t, tb.GenNS)
	dp1 := ifindex(t, tb.DPNS, tb.DPIface)

	tb2, err := Up(ctx, opts)
	if err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if !tb2.Complete(ctx) {
		t.Fatalf("after second Up: %v", tb2.State(ctx))
	}
	if nsInode(t, tb.GenNS) != gen1 || ifindex(t, tb.DPNS, tb.DPIface) != dp1 {
		t.Fatal("second Up recreated what existed instead of reusing it")
	}

	// Repair: a deleted link comes back on the next Up.
	if err := ipCmd(ctx, tb.DPNS, "link", "del", tb.DPOutIface); err != nil {
		t.Fatal(err)
	}
	if tb.Complete(ctx) {
		t.Fatal("Complete after deleting a link")
	}
	if _, err := Up(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if !tb.Complete(ctx) {
		t.Fatalf("Up did not repair: %v", tb.State(ctx))
	}

	if err := tb.Down(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), opts.Prefix) {
		t.Fatalf("namespaces left after Down:\n%s", out)
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, n := range []string{tb.GenIface, tb.NICIn, tb.NICOut, tb.DPIface, tb.DPOutIface, tb.SinkIface} {
		if strings.Contains(string(links), " "+n+"@") || strings.Contains(string(links), " "+n+":") {
			t.Fatalf("link %s in the root namespace after Down:\n%s", n, links)
		}
	}
	if err := tb.Down(); err != nil {
		t.Fatalf("second Down: %v", err)
	}
}

// TestPacketPaths sends a UDP datagram from the generator to DPIP and checks
// it arrives on DPIface through the nic hop, then injects a frame on
// DPOutIface and checks the sink's stack delivers it.
func TestPacketPaths(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	opts := Options{Prefix: testPrefix("p")}
	t.Cleanup(func() { _ = Down(opts) })
	tb, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}

	rx := packetSocket(t, tb.DPNS, tb.DPIface)
	payload := []byte("testbed-probe-payload")
	err = netns.Do(tb.GenNS, func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: tb.DPIP.AsSlice(), Port: 9999})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	frame := recvFrame(t, rx, func(f []byte) bool { return bytes.Contains(f, payload) })
	if !bytes.Equal(frame[0:6], tb.DPMAC) || !bytes.Equal(frame[6:12], tb.GenMAC) {
		t.Fatalf("frame at DP: dst %x src %x, want dst %s src %s", frame[0:6], frame[6:12], tb.DPMAC, tb.GenMAC)
	}

	// Forward path: a frame sent unchanged out DPOutIface reaches the sink's UDP socket.
	var sink *net.UDPConn
	err = netns.Do(tb.SinkNS, func() error {
		var err error
		sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: tb.SinkIP.AsSlice(), Port: 9998})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	tx := packetSocket(t, tb.DPNS, tb.DPOutIface)
	fwd := udpFrame(tb.DPMAC, tb.GenMAC, tb.GenIP.As4(), tb.SinkIP.As4(), 5555, 9998, payload)
	if err := unix.Send(tx, fwd, 0); err != nil {
		t.Fatal(err)
	}
	_ = sink.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 256)
	n, _, err := sink.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("sink did not receive the forwarded frame: %v", err)
	}
	if !bytes.Equal(buf[:n], payload) {
		t.Fatalf("sink got %q", buf[:n])
	}
}

func nsInode(t *testing.T, ns string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(netns.Path(ns), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func ifindex(t *testing.T, ns, name string) int {
	var idx int
	err := netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(name)
		if err == nil {
			idx = ifc.Index
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func packetSocket(t *testing.T, ns, iface string) int {
	t.Helper()
	var fd int
	err := netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return fd
}

func recvFrame(t *testing.T, fd int, match func([]byte) bool) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if match(buf[:n]) {
			return buf[:n]
		}
	}
	t.Fatal("no matching frame")
	return nil
}

// udpFrame builds an Ethernet/IPv4/UDP frame with a valid IP header checksum
// and no UDP checksum.
func udpFrame(dst, src net.HardwareAddr, sip, dip [4]byte, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:16], sip[:])
	copy(ip[16:20], dip[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(f[42:], payload)
	return f
}

// TestRouteSinkReplies checks the sink's way back to the generator: a
// route on SinkIface and a permanent neighbour entry with DPOutMAC, set
// idempotently. (dataplane/ovs's ping test shows replies crossing a
// forwarder with it.)
func TestRouteSinkReplies(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	opts := Options{Prefix: testPrefix("r")}
	t.Cleanup(func() { _ = Down(opts) })
	tb, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := tb.RouteSinkReplies(ctx); err != nil {
			t.Fatal(err)
		}
	}
	route, err := exec.Command("ip", "-n", tb.SinkNS, "route", "get", tb.GenIP.String()).Output()
	if err != nil || !strings.Contains(string(route), "dev "+tb.SinkIface) {
		t.Fatalf("route to %s in %s: %q, %v", tb.GenIP, tb.SinkNS, route, err)
	}
	neigh, err := exec.Command("ip", "-n", tb.SinkNS, "neigh", "show", tb.GenIP.String(), "dev", tb.SinkIface).Output()
	if err != nil || !strings.Contains(string(neigh), tb.DPOutMAC.String()) || !strings.Contains(string(neigh), "PERMANENT") {
		t.Fatalf("neighbour %s in %s: %q, %v", tb.GenIP, tb.SinkNS, neigh, err)
	}
}

// softnetProcessed reads the packets each CPU's backlog processed
// (/proc/net/softnet_stat, first column).
func softnetProcessed(t *testing.T) []uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		v, err := strconv.ParseUint(strings.Fields(line)[0], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// SteerRX moves the generator's packets past the NIC namespace's first hop
// to the given CPU's backlog: with 3000 packets sent from CPU 0, CPU 1's
// backlog processes at least as many while steered, and turning steering
// off stops that.
func TestSteerRXProcessesPacketsOnTheCPU(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/sys/devices/system/cpu/cpu1"); err != nil {
		testenv.Require(t, "needs CPU 1")
	}
	ctx := context.Background()
	opts := Options{Prefix: testPrefix("s")}
	t.Cleanup(func() { _ = Down(opts) })
	tb, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	send := func() uint64 {
		before := softnetProcessed(t)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Fatal(err)
		}
		err := netns.Do(tb.GenNS, func() error {
			conn, err := net.Dial("udp4", net.JoinHostPort(tb.DPIP.String(), "9"))
			if err != nil {
				return err
			}
			defer conn.Close()
			for range 3000 {
				conn.Write([]byte("steer"))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // let the remote backlog drain
		return softnetProcessed(t)[1] - before[1]
	}
	if err := tb.SteerRX(ctx, 1); err != nil {
		t.Fatal(err)
	}
	steered := send()
	if err := tb.SteerRX(ctx, -1); err != nil {
		t.Fatal(err)
	}
	unsteered := send()
	t.Logf("CPU 1 backlog processed %d packets steered, %d not", steered, unsteered)
	if steered < 3000 || unsteered >= 3000 {
		t.Errorf("CPU 1 processed %d packets while steered (want at least 3000) and %d while not (want fewer)", steered, unsteered)
	}
}
