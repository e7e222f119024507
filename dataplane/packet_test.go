package dataplane

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testFrame builds an Ethernet/IPv4/UDP frame.
func testFrame(payload int) []byte {
	f := make([]byte, 42+payload)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})  // dst
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1}) // src
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(28+payload))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:16], []byte{10, 0, 0, 1})
	copy(ip[16:20], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], 0xbeef)
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 1111)
	binary.BigEndian.PutUint16(udp[2:], 2222)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payload))
	binary.BigEndian.PutUint16(udp[6:], 0x1234)
	return f
}

func TestReflectFrameSwaps(t *testing.T) {
	f := testFrame(16)
	if !reflectFrame(f, false) {
		t.Fatal("reflectFrame rejected a UDP frame")
	}
	if !bytes.Equal(f[0:6], []byte{2, 0, 0, 0, 0, 1}) || !bytes.Equal(f[6:12], []byte{2, 0, 0, 0, 0, 2}) {
		t.Errorf("MACs not swapped: %x %x", f[0:6], f[6:12])
	}
	if !bytes.Equal(f[26:30], []byte{10, 0, 0, 2}) || !bytes.Equal(f[30:34], []byte{10, 0, 0, 1}) {
		t.Errorf("IPs not swapped: %v %v", f[26:30], f[30:34])
	}
	if sp, dp := binary.BigEndian.Uint16(f[34:]), binary.BigEndian.Uint16(f[36:]); sp != 2222 || dp != 1111 {
		t.Errorf("ports: %d %d", sp, dp)
	}
	if binary.BigEndian.Uint16(f[24:]) != 0xbeef || binary.BigEndian.Uint16(f[40:]) != 0x1234 {
		t.Error("checksums changed although swapping keeps them valid")
	}
	g := testFrame(16)
	reflectFrame(g, true)
	if binary.BigEndian.Uint16(g[40:]) != 0 {
		t.Error("checksum not cleared for a frame whose checksum was left to offload")
	}
}

// internetChecksum is RFC 1071's checksum computed from scratch: the
// independent reference the reflected frames are checked against.
func internetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// echoFrame builds an Ethernet/IPv4/ICMP echo request as ping sends it,
// both checksums computed from scratch.
func echoFrame(id, seq uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})  // dst
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1}) // src
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], seq^0x5a5a) // IP ID
	binary.BigEndian.PutUint16(ip[6:], 0x4000)     // DF, as ping sets it
	ip[8] = 64
	ip[9] = unix.IPPROTO_ICMP
	copy(ip[12:16], []byte{10, 0, 0, 1})
	copy(ip[16:20], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], internetChecksum(ip[:20]))
	icmp := ip[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], internetChecksum(icmp))
	return f
}

func TestReflectFrameAnswersEcho(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 2000; n++ {
		payload := make([]byte, rng.IntN(200)) // odd and even lengths, including none
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		id, seq := uint16(rng.Uint32()), uint16(rng.Uint32())
		if n < 4 { // the words next to the type at their extremes
			id, seq = []uint16{0, 0xffff, 0, 0xffff}[n], []uint16{0, 0xffff, 1, 0xfffe}[n]
		}
		f := echoFrame(id, seq, payload)
		req := append([]byte(nil), f...)
		if !reflectFrame(f, n%2 == 0) {
			t.Fatalf("frame %d: echo request not answered", n)
		}
		ip, icmp := f[14:34], f[34:]
		if !bytes.Equal(f[0:6], req[6:12]) || !bytes.Equal(f[6:12], req[0:6]) {
			t.Fatalf("frame %d: MACs not swapped: %x", n, f[:12])
		}
		if !bytes.Equal(ip[12:16], req[30:34]) || !bytes.Equal(ip[16:20], req[26:30]) {
			t.Fatalf("frame %d: IPs not swapped: %v", n, ip[12:20])
		}
		if icmp[0] != 0 || icmp[1] != 0 || !bytes.Equal(icmp[4:], req[38:]) {
			t.Fatalf("frame %d: reply header/body %x, request %x", n, icmp[:8], req[34:42])
		}
		if got, want := binary.BigEndian.Uint16(icmp[2:]), checksumWithout(icmp, 2); got != want {
			t.Fatalf("frame %d (id %#x seq %#x, %d bytes): ICMP checksum %#04x, recomputed %#04x", n, id, seq, len(payload), got, want)
		}
		if internetChecksum(ip) != 0 || binary.BigEndian.Uint16(ip[10:]) != binary.BigEndian.Uint16(req[24:]) {
			t.Fatalf("frame %d: IP header checksum no longer valid or changed", n)
		}
	}
}

// checksumWithout recomputes the checksum of b with its field at off zeroed.
func checksumWithout(b []byte, off int) uint16 {
	c := append([]byte(nil), b...)
	c[off], c[off+1] = 0, 0
	return internetChecksum(c)
}

func TestReflectFrameRejects(t *testing.T) {
	cases := map[string]func([]byte) []byte{
		"short":   func(f []byte) []byte { return f[:40] },
		"arp":     func(f []byte) []byte { binary.BigEndian.PutUint16(f[12:], 0x0806); return f },
		"tcp":     func(f []byte) []byte { f[23] = unix.IPPROTO_TCP; return f },
		"ipv6":    func(f []byte) []byte { f[14] = 0x65; return f },
		"bad ihl": func(f []byte) []byte { f[14] = 0x44; return f },
	}
	echo := func(mut func([]byte)) func([]byte) []byte {
		return func([]byte) []byte { f := echoFrame(7, 1, []byte("ping")); mut(f); return f }
	}
	cases["echo reply"] = echo(func(f []byte) { f[34] = 0 })
	cases["icmp timestamp"] = echo(func(f []byte) { f[34] = 13 })
	cases["echo code 1"] = echo(func(f []byte) { f[35] = 1 })
	cases["echo more fragments"] = echo(func(f []byte) { f[20] |= 0x20 })
	cases["echo fragment offset"] = echo(func(f []byte) { f[21] = 1 })
	cases["short echo"] = func([]byte) []byte { return echoFrame(7, 1, nil)[:14+20+7] }
	for name, mut := range cases {
		f := mut(testFrame(16))
		orig := append([]byte(nil), f...)
		if reflectFrame(f, false) {
			t.Errorf("%s: accepted", name)
		}
		if !bytes.Equal(f, orig) {
			t.Errorf("%s: modified a rejected frame", name)
		}
	}
}

func TestForwardFrameRewrite(t *testing.T) {
	f := testFrame(8)
	src, dst := []byte{2, 9, 9, 9, 9, 1}, []byte{2, 9, 9, 9, 9, 2}
	if !forwardFrame(f, src, dst, false) || !bytes.Equal(f[0:6], dst) || !bytes.Equal(f[6:12], src) {
		t.Fatalf("rewrite: %x", f[:12])
	}
	g := testFrame(8)
	orig := append([]byte(nil), g...)
	if !forwardFrame(g, nil, nil, false) || !bytes.Equal(g, orig) {
		t.Fatal("forward without next hop changed the frame")
	}
}

// memLoop is a Loop whose TX ring is plain memory, to exercise the
// per-packet path without sockets.
func memLoop(mode string) *Loop {
	l := &Loop{cfg: LoopConfig{Mode: mode}}
	l.tx = &txRing{fd: -1, mem: make([]byte, txFrames*frameSize)}
	return l
}

// freeTX marks every TX slot sent, as the kernel would.
func freeTX(l *Loop) {
	for i := 0; i < txFrames; i++ {
		binary.NativeEndian.PutUint32(l.tx.mem[i*frameSize:], unix.TP_STATUS_AVAILABLE)
	}
	l.tx.pending = 0
}

func TestHandleDoesNotAllocate(t *testing.T) {
	frames := map[string][]byte{"udp": testFrame(64), "icmp echo": echoFrame(7, 1, make([]byte, 56))}
	for _, mode := range []string{ModeReflect, ModeForward} {
		for kind, orig := range frames {
			l := memLoop(mode)
			f := append([]byte(nil), orig...)
			wait := int64(0)
			allocs := testing.AllocsPerRun(10000, func() {
				copy(f, orig) // a fresh request each time (a reflected echo is a reply)
				wait += 777   // every call records a residence sample
				l.handle(f, 0, wait)
				if l.tx.next == 0 {
					freeTX(l)
				}
			})
			if allocs != 0 {
				t.Errorf("%s/%s: %v allocations per frame", mode, kind, allocs)
			}
			if l.batch.packets == 0 || l.batch.tx != l.batch.packets || l.batch.unhandled != 0 {
				t.Errorf("%s/%s: handle did not send every frame: %+v", mode, kind, l.batch)
			}
			if r := l.c.residence.snapshot(); r.Count < 10000 || r.MaxNs < uint64(wait) {
				t.Errorf("%s/%s: residence not recorded per frame: count %d max %d", mode, kind, r.Count, r.MaxNs)
			}
		}
	}
}

func TestHandleQueuesReflectedFrame(t *testing.T) {
	l := memLoop(ModeReflect)
	f := testFrame(16)
	l.handle(f, 0, -1)
	got := l.tx.mem[txDataOffset : txDataOffset+len(f)]
	if !bytes.Equal(got, f) || !bytes.Equal(got[0:6], []byte{2, 0, 0, 0, 0, 1}) {
		t.Fatalf("TX slot holds %x", got[:14])
	}
	if st := binary.NativeEndian.Uint32(l.tx.mem); st != unix.TP_STATUS_SEND_REQUEST {
		t.Fatalf("TX slot status %d, want send request", st)
	}
	l.handle(testFrame(16)[:20], 0, -1)
	if l.batch.unhandled != 1 {
		t.Fatalf("short frame: unhandled %d", l.batch.unhandled)
	}
}

func BenchmarkHandle(b *testing.B) {
	l := memLoop(ModeReflect)
	f := testFrame(64)
	b.ReportAllocs()
	for b.Loop() {
		l.handle(f, 0, -1)
		if l.tx.next == 0 {
			freeTX(l)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		cfg   LoopConfig
		field string
	}{
		{LoopConfig{CPU: -1, Iface: "x"}, "cpu"},
		{LoopConfig{CPU: 1}, "iface"},
		{LoopConfig{CPU: 1, Iface: "this-name-is-too-long"}, "iface"},
		{LoopConfig{CPU: 1, Iface: "x", Mode: "mirror"}, "mode"},
		{LoopConfig{CPU: 1, Iface: "x", Mode: ModeForward}, "out_iface"},
		{LoopConfig{CPU: 1, Iface: "x", Priority: 100}, "priority"},
		{LoopConfig{CPU: 1, Iface: "x", Ring: "v1"}, "ring"},
		{LoopConfig{CPU: 1, Iface: "x", OutDstMAC: []byte{1, 2}}, "out_dst_mac"},
		{LoopConfig{CPU: 1, Iface: "x", NetNS: "no-such-netns-taichi"}, "netns"},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.field+":") {
			t.Errorf("%+v: err %v, want one naming %s", c.cfg, err, c.field)
		}
		if _, err := NewLoop(c.cfg); err == nil {
			t.Errorf("NewLoop(%+v) accepted", c.cfg)
		}
	}
	if err := (LoopConfig{CPU: 1, Iface: "x"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestControlClampsSlice(t *testing.T) {
	var c Control
	for in, want := range map[int64]int64{0: int64(DefaultSlice), 1: int64(MinSlice), int64(10 * MaxSlice): int64(MaxSlice)} {
		c.SetSlice(timeDuration(in))
		if int64(c.Slice()) != want {
			t.Errorf("SetSlice(%d) = %v, want %d", in, c.Slice(), want)
		}
	}
	c.SetYieldAfter(-1)
	if c.YieldAfter() != -1 {
		t.Fatal("YieldAfter")
	}
}

func TestEventWakeStaleKickDiscarded(t *testing.T) {
	w, err := NewEventWake()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Kick(0) {
		t.Fatal("kick delivered while not armed")
	}
	w.Arm()
	if !w.Kick(123) {
		t.Fatal("kick not delivered while armed")
	}
	w.Kick(456) // a later kick keeps the first stamp
	s, ok := w.Disarm()
	if !ok || s != 123 {
		t.Fatalf("Disarm = %d %v, want 123 true", s, ok)
	}
	w.Arm()
	if _, ok := w.Disarm(); ok {
		t.Fatal("Disarm reported a wake nobody sent")
	}
}

func timeDuration(ns int64) time.Duration { return time.Duration(ns) }
