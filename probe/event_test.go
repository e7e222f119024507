package probe

import (
	"encoding/binary"
	"strings"
	"testing"
	"unsafe"
)

// encodeEvent builds a record the way the XDP program lays it out.
func encodeEvent(ev Event) []byte {
	b := make([]byte, EventSize)
	le := binary.NativeEndian
	le.PutUint32(b[0:], eventMagic)
	le.PutUint16(b[4:], eventVersion)
	le.PutUint16(b[6:], uint16(ev.Core))
	le.PutUint32(b[8:], ev.Queue)
	le.PutUint32(b[12:], ev.Ifindex)
	le.PutUint64(b[16:], uint64(ev.StampNs))
	le.PutUint64(b[24:], ev.Seq)
	le.PutUint64(b[32:], ev.Packets)
	copy(b[40:], ev.Tag[:])
	return b
}

func TestEventLayoutMatchesBPF(t *testing.T) {
	var e probeEvent
	for name, got := range map[string]uintptr{
		"magic": unsafe.Offsetof(e.Magic), "version": unsafe.Offsetof(e.Version), "core": unsafe.Offsetof(e.Core),
		"queue": unsafe.Offsetof(e.Queue), "ifindex": unsafe.Offsetof(e.Ifindex), "ktime_ns": unsafe.Offsetof(e.KtimeNs),
		"seq": unsafe.Offsetof(e.Seq), "packets": unsafe.Offsetof(e.Packets), "tag": unsafe.Offsetof(e.Tag),
	} {
		want := map[string]uintptr{"magic": 0, "version": 4, "core": 6, "queue": 8, "ifindex": 12,
			"ktime_ns": 16, "seq": 24, "packets": 32, "tag": 40}[name]
		if got != want {
			t.Errorf("struct event field %s at %d, decoder reads %d", name, got, want)
		}
	}
}

func TestDecodeEvent(t *testing.T) {
	good := Event{Core: 3, Queue: 2, Ifindex: 7, StampNs: 123456789, Seq: 4, Packets: 99, Tag: [8]byte{42, 0, 0, 0, 0, 0, 0, 1}}
	got, err := DecodeEvent(encodeEvent(good))
	if err != nil || got != good {
		t.Fatalf("DecodeEvent = %+v, %v; want %+v", got, err, good)
	}
	cases := map[string]struct {
		mut  func([]byte) []byte
		want string
	}{
		"empty":     {func(b []byte) []byte { return nil }, "0 bytes"},
		"short":     {func(b []byte) []byte { return b[:EventSize-1] }, "47 bytes"},
		"long":      {func(b []byte) []byte { return append(b, 0) }, "49 bytes"},
		"magic":     {func(b []byte) []byte { b[0] ^= 0xff; return b }, "magic"},
		"version":   {func(b []byte) []byte { b[4] = 9; return b }, "version 9"},
		"core":      {func(b []byte) []byte { b[6], b[7] = 64, 0; return b }, "core 64"},
		"stamp":     {func(b []byte) []byte { clear(b[16:24]); return b }, "stamp"},
		"seq":       {func(b []byte) []byte { clear(b[24:32]); return b }, "seq 0"},
		"packets":   {func(b []byte) []byte { clear(b[32:40]); return b }, "packets 0"},
		"negstamp":  {func(b []byte) []byte { b[23] = 0x80; return b }, "stamp"},
		"all zeros": {func(b []byte) []byte { return make([]byte, EventSize) }, "magic"},
	}
	for name, c := range cases {
		_, err := DecodeEvent(c.mut(encodeEvent(good)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one mentioning %q", name, err, c.want)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(encodeEvent(Event{Core: 1, StampNs: 1, Seq: 1, Packets: 1}))
	f.Add(encodeEvent(Event{Core: 63, Queue: 64, StampNs: 1 << 62, Seq: 1 << 40, Packets: 5, Tag: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}))
	f.Add([]byte{})
	f.Add(make([]byte, EventSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEvent(b)
		if err != nil {
			return
		}
		// Whatever decodes must be a record the program could write, and
		// must round-trip.
		if len(b) != EventSize || ev.Core >= MaxCores || ev.StampNs <= 0 || ev.Seq == 0 || ev.Packets == 0 {
			t.Fatalf("accepted %x as %+v", b, ev)
		}
		again := encodeEvent(ev)
		if string(again) != string(b) {
			t.Fatalf("round trip %x -> %+v -> %x", b, ev, again)
		}
	})
}

func TestParseNetDev(t *testing.T) {
	const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
nic-in: 1060000   10000    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  nic-in2: 5 6 0 0 0 0 0 0 0 0 0 0 0 0 0 0
`
	got, err := parseNetDev([]byte(text), "nic-in")
	if err != nil || got != (netDevRX{packets: 10000, bytes: 1060000}) {
		t.Fatalf("parseNetDev = %+v, %v", got, err)
	}
	if _, err := parseNetDev([]byte(text), "eth9"); err == nil || !strings.Contains(err.Error(), `"eth9"`) {
		t.Fatalf("missing iface: %v", err)
	}
	if _, err := parseNetDev([]byte("x: 1\n"), "x"); err == nil {
		t.Fatal("short line accepted")
	}
	if _, err := parseNetDev([]byte("x: a b\n"), "x"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{}, "iface: interface name must not be empty"},
		{Options{Iface: "a/b"}, "iface:"},
		{Options{Iface: "a-very-long-interface"}, "iface:"},
		{Options{Iface: "x", Core: -1}, "core:"},
		{Options{Iface: "x", Core: MaxCores}, "core:"},
		{Options{Iface: "x", Queues: map[int]int{65: 1}}, "queues: queue 65"},
		{Options{Iface: "x", Queues: map[int]int{1: 99}}, "queues: queue 1: core 99"},
		{Options{Iface: "x", Interval: -1}, "interval:"},
		{Options{Iface: "x", TagOffset: MaxTagOffset + 1}, "tag_offset:"},
	} {
		err := c.o.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want prefix %q", c.o, err, c.want)
		}
	}
	o := Options{Iface: "x", Core: 1, Queues: map[int]int{2: 0, 5: 3, 7: 0}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := o.cores(); len(got) != 3 || got[0] != 1 || got[1] != 0 || got[2] != 3 {
		t.Fatalf("cores %v", got)
	}
	if o.coreOf(5) != 3 || o.coreOf(4) != 1 {
		t.Fatal("coreOf")
	}
	if _, err := New("afxdp", Options{Iface: "x"}); err == nil || !strings.HasPrefix(err.Error(), "backend:") {
		t.Fatalf("unknown backend: %v", err)
	}
}

func TestPercentilesNs(t *testing.T) {
	var ns []int64
	for i := int64(1); i <= 100; i++ {
		ns = append(ns, (101-i)*1000)
	}
	p := PercentilesNs(ns)
	if p.N != 100 || p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 || p.Min != 1 {
		t.Fatalf("%+v", p)
	}
	if (PercentilesNs(nil) != Percentiles{}) {
		t.Fatal("empty")
	}
}

func TestUDPSeq(t *testing.T) {
	f := make([]byte, frameLen)
	f[12], f[13], f[14], f[14+9] = 0x08, 0x00, 0x45, 17
	binary.LittleEndian.PutUint64(f[42+DefaultTagOffset:], 77)
	if seq, ok := udpSeq(f); !ok || seq != 77 {
		t.Fatalf("udpSeq = %d, %v", seq, ok)
	}
	if got := (Event{Tag: [8]byte{77}}).TagSeq(); got != 77 {
		t.Fatalf("TagSeq = %d", got)
	}
	f[14+9] = 6
	if _, ok := udpSeq(f); ok {
		t.Fatal("TCP accepted")
	}
	if _, ok := udpSeq(f[:50]); ok {
		t.Fatal("short frame accepted")
	}
}

func TestParseQueueStats(t *testing.T) {
	e := parseQueueStats([]string{"rx_packets", "rx_queue_0_packets", "rx_queue_0_bytes", "rx1_packets", "rx-2.packets",
		"rx-2.bytes", "rx_queue_3_xdp_packets", "tx_queue_0_packets", "rx_queue_0_drops", "rx0_xdp_drop"})
	if e == nil {
		t.Fatal("no queues found")
	}
	want := map[int]int{0: 1, 1: 3, 2: 4, 3: 6}
	if len(e.packets) != len(want) {
		t.Fatalf("packets %v, want %v", e.packets, want)
	}
	for q, i := range want {
		if e.packets[q] != i {
			t.Fatalf("packets %v, want %v", e.packets, want)
		}
	}
	if e.bytes[0] != 2 || e.bytes[2] != 5 || len(e.bytes) != 2 {
		t.Fatalf("bytes %v", e.bytes)
	}
	if parseQueueStats([]string{"rx_packets", "tx_queue_0_packets"}) != nil {
		t.Fatal("found queues where there are none")
	}
}
