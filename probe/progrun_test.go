package probe

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// progFixture loads the XDP program and a core's ring without attaching
// anything, for BPF_PROG_TEST_RUN.
type progFixture struct {
	objs   probeObjects
	states *mmapRegion
	counts *mmapRegion
	ws     *XDPWakeSource
}

func loadFixture(t testing.TB, core int) *progFixture {
	t.Helper()
	needRoot(t)
	spec, err := loadProbe()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables[probeVarTagOffset].Set(uint32(DefaultTagOffset)); err != nil {
		t.Fatal(err)
	}
	f := &progFixture{}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		t.Fatal(withVerifierLog(err))
	}
	t.Cleanup(func() { f.objs.Close() })
	for slot := 0; slot <= MaxQueues; slot++ {
		if err := f.objs.QueueCore.Put(uint32(slot), uint32(core)); err != nil {
			t.Fatal(err)
		}
	}
	if f.states, err = mmapArray(f.objs.CoreStates.FD(), coreStateSize, MaxCores); err != nil {
		t.Fatal(err)
	}
	if f.counts, err = mmapArray(f.objs.QueueCounters.FD(), queueCounterSize, MaxQueues+1); err != nil {
		t.Fatal(err)
	}
	if f.ws, err = newXDPWakeSource(core, spec.Maps[probeMapCoreRings].InnerMap, f.states); err != nil {
		t.Fatal(err)
	}
	if err := f.objs.CoreRings.Put(uint32(core), f.ws.ring); err != nil {
		t.Fatal(err)
	}
	return f
}

// frame returns an Ethernet/IPv4/UDP frame whose payload carries seq at
// DefaultTagOffset, as trafficgen writes it.
func testFrame(seq uint64) []byte {
	f := make([]byte, frameLen)
	f[12], f[13] = 0x08, 0x00
	f[14] = 0x45
	f[14+9] = 17
	binary.LittleEndian.PutUint64(f[42+DefaultTagOffset:], seq)
	return f
}

func (f *progFixture) run(t *testing.T, frame []byte) {
	t.Helper()
	ret, err := f.objs.TaichiProbe.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatal(err)
	}
	if ret != 2 { // XDP_PASS
		t.Fatalf("program returned %d, want XDP_PASS", ret)
	}
}

// Many arm/fire/disarm cycles move the ring's positions around its 4 KiB
// several times: records that wrap must decode like the others.
func TestProgRunRingWrapsAround(t *testing.T) {
	f := loadFixture(t, 2)
	const cycles = 300 // 300 * 56 bytes ≈ 4 laps
	for i := uint64(1); i <= cycles; i++ {
		f.ws.Arm()
		f.run(t, testFrame(i))
		f.run(t, testFrame(1000+i)) // after the first: no second event
		ev, ok := f.ws.DisarmEvent()
		if !ok || ev.Seq != i || ev.TagSeq() != i || ev.Core != 2 || ev.Packets != 2*i-1 {
			t.Fatalf("cycle %d: event %+v ok=%v", i, ev, ok)
		}
		if f.ws.cons.pending() {
			t.Fatalf("cycle %d: a second record", i)
		}
	}
	if pk := atomic.LoadUint64(f.counts.word(0)); pk != 2*cycles {
		t.Fatalf("queue 0 counted %d, want %d", pk, 2*cycles)
	}
	if by := atomic.LoadUint64(f.counts.word(8)); by != 2*cycles*frameLen {
		t.Fatalf("queue 0 bytes %d", by)
	}
	if cs := f.ws.Stats(); cs.Fired != cycles || cs.Delivered != cycles || cs.Lost != 0 || cs.Missed != 0 {
		t.Fatalf("stats %+v", cs)
	}
}

// Frames the program cannot parse still count and still fire; their tag
// is zero.
func TestProgRunNonUDPFrame(t *testing.T) {
	f := loadFixture(t, 1)
	f.ws.Arm()
	arp := make([]byte, 60)
	arp[12], arp[13] = 0x08, 0x06
	f.run(t, arp)
	ev, ok := f.ws.DisarmEvent()
	if !ok || ev.TagSeq() != 0 || ev.Packets != 1 {
		t.Fatalf("event %+v ok=%v", ev, ok)
	}
}

// When nobody consumes the ring it fills; the program then counts the
// event as lost and Disarm does not wait for it.
func TestProgRunLostWhenRingFull(t *testing.T) {
	f := loadFixture(t, 3)
	// Fire repeatedly without consuming: arm by a raw store, as Arm would
	// drain the ring.
	for i := uint64(1); i <= 100; i++ {
		atomic.StoreUint64(f.ws.state, coreArmed)
		f.run(t, testFrame(i))
	}
	cs := f.ws.Stats()
	if cs.Fired != 100 || cs.Lost == 0 || cs.Lost >= 100 {
		t.Fatalf("stats %+v: want some records lost to a full 4 KiB ring", cs)
	}
	if got := atomic.LoadUint64(f.ws.state); got != coreLost {
		t.Fatalf("state %d after a lost record, want LOST", got)
	}
	if _, ok := f.ws.Disarm(); ok {
		t.Fatal("Disarm reported an event that was lost")
	}
	// Arm drains the backlog; the next transition is delivered again.
	f.ws.Arm()
	if f.ws.cons.pending() {
		t.Fatal("Arm left stale records")
	}
	f.run(t, testFrame(500))
	ev, ok := f.ws.DisarmEvent()
	if !ok || ev.TagSeq() != 500 || ev.Seq != 101 {
		t.Fatalf("after recovery: %+v ok=%v", ev, ok)
	}
}

// BenchmarkArmDisarm: the DP loop's per-yield cost when no packet came
// (the common idle-timeout case): a store and a swap on shared memory.
func BenchmarkArmDisarm(b *testing.B) {
	f := loadFixture(b, 1)
	for b.Loop() {
		f.ws.Arm()
		f.ws.Disarm()
	}
}

// BenchmarkQueueCounterRead compares reading a queue's counters from the
// mmapped array with a map lookup syscall.
func BenchmarkQueueCounterRead(b *testing.B) {
	f := loadFixture(b, 1)
	b.Run("mmap-atomic", func(b *testing.B) {
		for b.Loop() {
			_ = atomic.LoadUint64(f.counts.word(0))
			_ = atomic.LoadUint64(f.counts.word(8))
		}
	})
	b.Run("lookup-syscall", func(b *testing.B) {
		var qc probeQueueCounter
		for b.Loop() {
			if err := f.objs.QueueCounters.Lookup(uint32(0), &qc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkProgramPerPacket: the XDP program's own cost per packet, timed
// by the kernel over many BPF_PROG_TEST_RUN repeats (no scheduling noise):
// the common path (core running, nothing to report) against a minimal
// XDP_PASS program run the same way.
func BenchmarkProgramPerPacket(b *testing.B) {
	f := loadFixture(b, 1)
	pass, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer pass.Close()
	frame := testFrame(1)
	const repeat = 1_000_000
	for _, c := range []struct {
		name string
		prog *ebpf.Program
	}{{"xdp_pass", pass}, {"taichi_probe", f.objs.TaichiProbe}} {
		b.Run(c.name, func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				_, d, err := c.prog.Benchmark(frame, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
		})
	}
}
