package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// twoNSMultiQueue builds a veth pair with four queues between two private
// namespaces: the sender's "a" and the probe's "b". Returns the namespaces,
// the probe-side interface and the receiver's address.
func twoNSMultiQueue(t *testing.T) (nsA, nsB, ifB string, dst netip.Addr) {
	t.Helper()
	needRoot(t)
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, bedSeq.Add(1))
	nsA, nsB = "tpmq"+id+"a", "tpmq"+id+"b"
	ifA, ifB := "mqa"+id, "mqb"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{nsA, nsB} {
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	const macB = "02:7b:00:00:00:02"
	run("ip", "-n", nsA, "link", "add", ifA, "numtxqueues", "4", "numrxqueues", "4", "type", "veth",
		"peer", "name", ifB, "address", macB, "numtxqueues", "4", "numrxqueues", "4", "netns", nsB)
	run("ip", "-n", nsA, "addr", "add", "10.78.0.1/24", "dev", ifA)
	// No address on b: its kernel drops the datagrams silently (no ICMP
	// errors, no ARP), so b receives exactly what a sends.
	run("ip", "-n", nsA, "link", "set", ifA, "up")
	run("ip", "-n", nsB, "link", "set", ifB, "up")
	run("ip", "-n", nsA, "neigh", "replace", "10.78.0.2", "lladdr", macB, "dev", ifA, "nud", "permanent")
	// A fresh veth drops what it sends until the kernel gives it a qdisc.
	waitFor(t, "links operational", func() bool {
		for _, l := range [][2]string{{nsA, ifA}, {nsB, ifB}} {
			out, err := exec.Command("ip", "-n", l[0], "-j", "link", "show", "dev", l[1]).Output()
			var info []struct {
				OperState string `json:"operstate"`
				Qdisc     string `json:"qdisc"`
			}
			if err != nil || json.Unmarshal(out, &info) != nil || len(info) != 1 || info[0].OperState != "UP" || info[0].Qdisc == "noop" {
				return false
			}
		}
		return true
	})
	return nsA, nsB, ifB, netip.MustParseAddr("10.78.0.2")
}

func TestXDPQueueToCoreMapping(t *testing.T) {
	nsA, nsB, ifB, dst := twoNSMultiQueue(t)
	queues := map[int]int{0: 10, 1: 11, 2: 12, 3: 13}
	p, err := NewXDP(Options{Iface: ifB, NetNS: nsB, Core: 1, Queues: queues, PinDir: testPinDir(t), LockDir: testLockDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	wakes := map[int]*XDPWakeSource{}
	for _, core := range queues {
		ws, err := p.XDPWakeSource(core)
		if err != nil {
			t.Fatal(err)
		}
		ws.Arm()
		wakes[core] = ws
	}
	// Flows from different sockets hash to different TX queues of the
	// sender's veth, which are the same-numbered RX queues of its peer.
	sent := 0
	for port := 0; port < 32; port++ {
		s, err := DialUDP(nsA, netip.AddrPortFrom(dst, uint16(7000+port)))
		if err != nil {
			t.Fatal(err)
		}
		sendN(t, s, uint64(sent+1), 10)
		sent += 10
		s.Close()
	}
	waitFor(t, "all packets counted", func() bool {
		var n uint64
		for q := 0; q <= MaxQueues; q++ {
			pk, _ := p.Queue(q)
			n += pk
		}
		return n == uint64(sent)
	})
	used := 0
	for q, core := range queues {
		pk, _ := p.Queue(q)
		ws := wakes[core]
		ev, ok := ws.DisarmEvent()
		switch {
		case pk == 0 && (ok || ws.Stats().Fired != 0):
			t.Errorf("queue %d saw nothing, yet core %d fired (%+v)", q, core, ev)
		case pk > 0 && (!ok || ws.Stats().Fired != 1 || ev.Queue != uint32(q) || ev.Core != core):
			t.Errorf("queue %d saw %d packets: core %d event %+v ok=%v fired=%d, want one for queue %d",
				q, pk, core, ev, ok, ws.Stats().Fired, q)
		}
		if pk > 0 {
			used++
		}
	}
	if def, _ := p.XDPWakeSource(1); def.Stats().Fired != 0 {
		t.Errorf("default core 1 fired although every queue is mapped elsewhere")
	}
	if used < 2 {
		t.Fatalf("32 flows landed on %d queue(s): the mapping was not exercised", used)
	}
	t.Logf("%d packets over %d queues", sent, used)
}
