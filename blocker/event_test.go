package blocker

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// record builds a wire record the way tracer.c writes it.
func record(kind Kind, dpTID, pid, tgid int, delay time.Duration, flags uint32, comm string) []byte {
	b := make([]byte, EventSize)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], eventMagic)
	ne.PutUint16(b[4:], eventVersion)
	ne.PutUint16(b[6:], uint16(kind))
	ne.PutUint32(b[8:], 1)
	ne.PutUint32(b[12:], uint32(dpTID))
	ne.PutUint64(b[16:], uint64(time.Hour))
	ne.PutUint64(b[24:], uint64(delay))
	ne.PutUint32(b[32:], uint32(pid))
	ne.PutUint32(b[36:], uint32(tgid))
	ne.PutUint32(b[40:], flags)
	ne.PutUint64(b[56:], 4242)
	copy(b[64:79], comm)
	return b
}

func TestDecodeEvent(t *testing.T) {
	ev, err := DecodeEvent(record(KindBlame, 7, 100, 99, 300*time.Microsecond, FlagInKernel|FlagSyscall, "stress-ng-dentry"))
	if err != nil {
		t.Fatal(err)
	}
	want := Event{Kind: KindBlame, CPU: 1, DPTID: 7, StampNs: int64(time.Hour), Delay: 300 * time.Microsecond,
		PID: 100, TGID: 99, Flags: FlagInKernel | FlagSyscall, CgroupID: 4242, Comm: "stress-ng-dentr"}
	if ev != want {
		t.Fatalf("decoded %+v, want %+v", ev, want)
	}
	if !ev.InKernel() || ev.KernelThread() {
		t.Fatalf("InKernel %v KernelThread %v, want true false", ev.InKernel(), ev.KernelThread())
	}
	ex, err := DecodeEvent(record(KindExec, 0, 5, 5, 0, 0, "vm-setup"))
	if err != nil || ex.Kind != KindExec || ex.Comm != "vm-setup" || ex.TGID != 5 {
		t.Fatalf("exec record: %+v, %v", ex, err)
	}
}

func TestDecodeEventRejects(t *testing.T) {
	good := func() []byte { return record(KindBlame, 7, 100, 99, time.Millisecond, FlagInKernel, "x") }
	ne := binary.NativeEndian
	cases := map[string]struct {
		b    []byte
		want string
	}{
		"short":         {good()[:EventSize-1], "79 bytes"},
		"magic":         {func() []byte { b := good(); b[0] ^= 1; return b }(), "magic"},
		"version":       {func() []byte { b := good(); ne.PutUint16(b[4:], 9); return b }(), "version 9"},
		"kind":          {func() []byte { b := good(); ne.PutUint16(b[6:], 3); return b }(), "kind 3"},
		"cpu":           {func() []byte { b := good(); ne.PutUint32(b[8:], 4096); return b }(), "cpu 4096"},
		"stamp":         {func() []byte { b := good(); ne.PutUint64(b[16:], 0); return b }(), "stamp 0"},
		"delay":         {func() []byte { b := good(); ne.PutUint64(b[24:], uint64(2*time.Hour)); return b }(), "delay"},
		"pid":           {record(KindBlame, 7, 0, 99, time.Millisecond, 0, "x"), "pid 0"},
		"dp tid":        {record(KindBlame, 0, 5, 5, time.Millisecond, 0, "x"), "dp tid 0"},
		"flags":         {record(KindBlame, 7, 5, 5, time.Millisecond, 0x400, "x"), "unknown flags"},
		"kernel w/o":    {record(KindBlame, 7, 5, 5, time.Millisecond, FlagSyscall, "x"), "without the in-kernel flag"},
		"other w/o":     {func() []byte { b := good(); ne.PutUint32(b[44:], 3); return b }(), "without its flag"},
		"other missing": {record(KindBlame, 7, 5, 5, time.Millisecond, FlagOther, "x"), "other-task flag"},
		"exec delay":    {record(KindExec, 0, 5, 5, time.Millisecond, 0, "x"), "exec record"},
		"comm":          {func() []byte { b := good(); copy(b[64:], strings.Repeat("a", 16)); return b }(), "NUL"},
	}
	for name, c := range cases {
		_, err := DecodeEvent(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(record(KindBlame, 7, 100, 99, time.Millisecond, FlagInKernel|FlagOther, "a"))
	f.Add(record(KindExec, 0, 5, 5, 0, 0, "vm-setup"))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEvent(b)
		if err != nil {
			return
		}
		if ev.PID <= 0 || ev.TGID <= 0 || ev.StampNs <= 0 || ev.Delay < 0 || len(ev.Comm) >= commLen {
			t.Fatalf("accepted an impossible event: %+v", ev)
		}
		if ev.Kind == KindBlame && ev.DPTID <= 0 {
			t.Fatalf("blame without a DP thread: %+v", ev)
		}
	})
}

func TestQuantile(t *testing.T) {
	var s Stats
	if s.Quantile(0.99) != 0 {
		t.Fatal("empty histogram: want 0")
	}
	s.Hist[10] = 98 // [1024, 2048) ns
	s.Hist[20] = 2  // [~1ms, ~2ms)
	if got := s.Quantile(0.5); got != 2048 {
		t.Errorf("p50 %v, want 2.048µs", got)
	}
	if got := s.Quantile(0.99); got != 1<<21 {
		t.Errorf("p99 %v, want %v", got, time.Duration(1<<21))
	}
	if d := s.Sub(s); d.Hist[10] != 0 || d.Hist[20] != 0 {
		t.Errorf("Sub of itself: %v", d.Hist)
	}
}

func TestCommKey(t *testing.T) {
	k, err := commKey("a-very-long-command-name")
	if err != nil || cString(k[:]) != "a-very-long-com" {
		t.Fatalf("commKey: %q %v, want the first 15 bytes", cString(k[:]), err)
	}
	if _, err := commKey(""); err == nil {
		t.Fatal("empty command accepted")
	}
}
