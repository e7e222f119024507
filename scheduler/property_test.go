package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// checker is an Actuator that tracks the cpuset and flags decisions that
// break the two-speed rules.
type checker struct {
	in         map[int]bool
	failLend   bool
	failBack   bool
	violations []string
	lends      int
}

// A failed write changes nothing, as with a cgroup file.
func (c *checker) Lend(cpu int) error {
	c.lends++
	if c.failLend {
		return errInjected
	}
	c.in[cpu] = true
	return nil
}

func (c *checker) Reclaim(cpu int) error {
	if c.failBack {
		return errInjected
	}
	c.in[cpu] = false
	return nil
}

func (c *checker) SetYield(cpu int, after int64, slice time.Duration) {
	if after >= 0 && !c.in[cpu] {
		c.violations = append(c.violations, fmt.Sprintf("cpu %d may yield but is not in the CP cpuset", cpu))
	}
	if slice <= 0 {
		c.violations = append(c.violations, fmt.Sprintf("cpu %d unbounded slice %v", cpu, slice))
	}
}

func (c *checker) Wake(int) {}

// runTrace decodes data into events (4 bytes each) and checks invariants
// after each one.
func runTrace(t *testing.T, policy PolicyName, data []byte) {
	p := DefaultParams()
	p.Policy = policy
	p.SLO, p.SLOMinSamples = us(100), 3
	p.FlapLimit, p.FlapWindow, p.FlapHold = 4, ms(5), ms(20)
	p.GuardBackoff, p.GuardBackoffMax = ms(50), ms(400)
	p.LoadWindow = ms(100)
	act := &checker{in: map[int]bool{}}
	cpus := []int{1, 2}
	e := newEngine(p, cpus, act, quietLogger(), t0)
	e.onTransition = func(cpu int, from, to State, at time.Time) {
		if to == Lent && !e.byCPU[cpu].inCPUSet {
			t.Fatalf("cpu %d LENT while outside the CP cpuset", cpu)
		}
	}
	e.start(t0)
	now := time.Duration(0)
	for len(data) >= 4 {
		b := data[:4]
		data = data[4:]
		cpu := cpus[int(b[1])%len(cpus)]
		if b[1] == 255 {
			cpu = 9 // not a DP core
		}
		now += time.Duration(b[2]) * us(7)
		if b[0]%16 == 15 { // sometimes jump far (timers fire)
			now += time.Duration(b[3]) * ms(3)
		}
		ev := Event{CPU: cpu, At: at(now)}
		if b[3]%29 == 0 { // out-of-order timestamp
			ev.At = at(now - us(50))
		}
		switch b[0] % 12 {
		case 0:
			ev.Kind = EvIdle
			ev.EmptyPolls = int64(b[3])
		case 1:
			ev.Kind = EvBusy
		case 2, 3:
			ev.Kind = EvYield
		case 4, 5:
			ev.Kind, ev.Wake, ev.Latency = EvWake, WakeCause(b[3]%3), time.Duration(b[3])*us(2)
		case 6:
			ev.Kind = EvProbe
		case 7:
			ev.Kind, ev.Interval, ev.BusyFraction = EvLoad, ms(10), float64(b[3])/255
		case 8:
			ev.Kind, ev.Residence = EvResidence, lateResidence(uint64(b[3])*10, uint64(b[3]%7), time.Duration(b[3])*us(3))
		case 9:
			ev.Kind, ev.Harvested = EvHarvested, time.Duration(b[3])*ms(1)
		case 10:
			act.failLend, act.failBack = b[3]%5 == 0, b[3]%7 == 0
			continue
		case 11:
			if policy == PolicyStatic { // the static property needs static throughout
				continue
			}
			e.setPolicy([]Policy{staticPolicy{}, dynamicPolicy{}, taichiPolicy{}}[b[3]%3], at(now))
			continue
		}
		e.handle(ev)
		for _, c := range e.cores {
			if due, ok := e.deadline(c); ok != c.hasDue || !due.Equal(c.due) {
				t.Fatalf("cpu %d: cached timer %v (%v), computed %v (%v)", c.cpu, c.due, c.hasDue, due, ok)
			}
			if c.state == Reclaiming && c.reclaimBy.After(e.now.Add(p.ReclaimTimeout)) {
				t.Fatalf("cpu %d reclaim deadline %v beyond the bound", c.cpu, c.reclaimBy.Sub(e.now))
			}
			if c.cpusetKnown && act.in[c.cpu] != c.inCPUSet {
				t.Fatalf("cpu %d: engine believes in_cpuset=%v, cpuset says %v", c.cpu, c.inCPUSet, act.in[c.cpu])
			}
			if tc, ok := c.pol.(*taichiCore); ok && tc.benched && c.inCPUSet && c.retryAt.IsZero() {
				t.Fatalf("cpu %d benched, in the CP cpuset, and no retry pending", c.cpu)
			}
			if e.pol.Name() == PolicyStatic && c.state == Lent {
				t.Fatalf("cpu %d left LENT under static", c.cpu)
			}
		}
	}
	e.advance(at(now + time.Hour))
	if len(act.violations) > 0 {
		t.Fatalf("violations: %v", act.violations[:min(5, len(act.violations))])
	}
	if policy == PolicyStatic && act.lends > 0 {
		t.Fatalf("static called Lend %d times", act.lends)
	}
	snap := e.snapshot(at(now))
	for _, c := range snap.Cores {
		if policy == PolicyStatic && (c.Lends > 0 || c.LentTotal > 0 || c.InCPUSet) {
			t.Fatalf("static core %d lent: %+v", c.CPU, c)
		}
	}
}

func FuzzEngineInvariants(f *testing.F) {
	f.Add([]byte{2, 0, 1, 0, 4, 0, 10, 3, 6, 1, 2, 0, 11, 0, 0, 0})
	f.Add([]byte{2, 0, 1, 0, 4, 0, 10, 200, 2, 0, 1, 0, 4, 0, 10, 201, 2, 0, 1, 0, 4, 0, 10, 202, 15, 0, 0, 30})
	f.Add([]byte{10, 0, 0, 0, 11, 0, 0, 2, 2, 1, 1, 1, 6, 1, 3, 0, 4, 1, 3, 58})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, pol := range []PolicyName{PolicyStatic, PolicyDynamic, PolicyTaichi} {
			runTrace(t, pol, data)
		}
	})
}

// TestRandomTracesKeepInvariants is the fuzz target's property run over
// seeded random traces, so plain `go test` explores more than the seeds.
func TestRandomTracesKeepInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		data := make([]byte, 4*(50+rng.IntN(400)))
		for j := range data {
			data[j] = byte(rng.UintN(256))
		}
		for _, pol := range []PolicyName{PolicyStatic, PolicyDynamic, PolicyTaichi} {
			t.Run(fmt.Sprintf("%s/%d", pol, i), func(t *testing.T) { runTrace(t, pol, data) })
		}
	}
}
