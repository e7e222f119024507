package sim

import (
	"slices"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

// Costs are the DP loop model's times: what one empty poll, one packet and
// one wake of a blocked loop take, and how long before a packet the probe
// reports it (0: no probe).
type Costs struct {
	Poll, Packet, Wake, Lead time.Duration
}

// DefaultCosts: a 1 µs poll and packet, the 30 µs cross-core wake of the
// development VM (docs/design.md), the paper's 3 µs probe lead.
var DefaultCosts = Costs{Poll: time.Microsecond, Packet: time.Microsecond, Wake: 30 * time.Microsecond, Lead: 3 * time.Microsecond}

// loop models one DP core's loop under the engine's knobs.
type loop struct {
	cpu   int
	costs Costs
	src   Arrivals

	next    time.Duration // the next packet's arrival (valid when more)
	more    bool
	blocked bool
	// pollFrom: polling since (the last packet or wake); blockedAt: yield.
	pollFrom, blockedAt time.Duration
	// knobs, as the engine last set them (yieldAfter <0: never yield).
	yieldAfter int64
	slice      time.Duration
	probeWake  bool
	// engineWake: the engine asked the blocked loop to wake (Actuator.Wake)
	// at this time; -1 when it did not.
	engineWake time.Duration

	// Per sampling interval (reset by the sampler) and in total.
	waits   []time.Duration // per packet: arrival to processing
	busy    time.Duration
	packets int64
	lent    time.Duration
	wakes   map[scheduler.WakeCause]uint64
}

func newLoop(cpu int, src Arrivals, c Costs) *loop {
	l := &loop{cpu: cpu, costs: c, src: src, yieldAfter: -1, engineWake: -1, wakes: map[scheduler.WakeCause]uint64{}}
	l.next, l.more = src.Next()
	return l
}

// due is when the loop does its next thing, and false when it never will
// (no packets left and never yields).
func (l *loop) due() (time.Duration, bool) {
	if l.blocked {
		at, _ := l.wakeAt()
		return at, true
	}
	if y, ok := l.yieldAt(); ok && (!l.more || y < l.next) {
		return y, true
	}
	if l.more {
		return max(l.next, l.pollFrom), true
	}
	return 0, false
}

func (l *loop) yieldAt() (time.Duration, bool) {
	if l.yieldAfter < 0 {
		return 0, false
	}
	return l.pollFrom + time.Duration(max(l.yieldAfter, 1))*l.costs.Poll, true
}

// wakeAt is when a blocked loop runs again and why: the earliest of the
// packet's own wake, the probe's warning (when the engine lets it wake the
// loop), the engine's Wake, and the end of the bounded wait.
func (l *loop) wakeAt() (time.Duration, scheduler.WakeCause) {
	at, cause := l.blockedAt+l.slice, scheduler.WakeTimeout
	consider := func(t time.Duration, c scheduler.WakeCause) {
		if t < at {
			at, cause = t, c
		}
	}
	if l.more {
		if l.probeWake && l.costs.Lead > 0 {
			consider(max(l.next-l.costs.Lead, l.blockedAt)+l.costs.Wake, scheduler.WakeProbe)
		}
		consider(max(l.next, l.blockedAt)+l.costs.Wake, scheduler.WakeRx)
	}
	if l.engineWake >= 0 {
		consider(max(l.engineWake, l.blockedAt)+l.costs.Wake, scheduler.WakeProbe)
	}
	return at, cause
}

// step does the loop's next thing at now (= due()) and reports the event
// the engine must see, if any.
func (l *loop) step(now time.Duration) (scheduler.Event, bool) {
	if l.blocked {
		at, cause := l.wakeAt()
		exposed := time.Duration(-1) // a timeout with nothing waiting
		if l.more && l.next <= at {
			exposed = at - l.next
		} else if cause != scheduler.WakeTimeout {
			exposed = 0
		}
		l.blocked, l.engineWake, l.pollFrom = false, -1, at
		l.lent += at - l.blockedAt
		l.wakes[cause]++
		return scheduler.Event{Kind: scheduler.EvWake, CPU: l.cpu, Wake: cause, Latency: exposed}, true
	}
	if y, ok := l.yieldAt(); ok && y <= now && (!l.more || y < l.next) {
		l.blocked, l.blockedAt = true, now
		return scheduler.Event{Kind: scheduler.EvYield, CPU: l.cpu}, true
	}
	// Packets: everything that has arrived by now, one after the other.
	t := now
	for l.more && l.next <= t {
		l.waits = append(l.waits, t-l.next)
		t += l.costs.Packet
		l.packets++
		l.next, l.more = l.src.Next()
	}
	l.busy += t - now
	l.pollFrom = t
	return scheduler.Event{}, false
}

// sample ends a sampling interval: the engine's load and residence
// events for it, and the interval's residence p99.
func (l *loop) sample(interval time.Duration) (load, res scheduler.Event, p99 time.Duration) {
	waits := l.waits
	slices.Sort(waits)
	if n := len(waits); n > 0 {
		p99 = waits[min(n-1, (99*n+99)/100-1)]
	}
	load = scheduler.Event{Kind: scheduler.EvLoad, CPU: l.cpu, Interval: interval,
		BusyFraction: min(1, float64(l.busy)/float64(interval)), Packets: l.packets}
	res = scheduler.Event{Kind: scheduler.EvResidence, CPU: l.cpu, Residence: scheduler.Residence{
		Packets: uint64(len(waits)), P99: p99,
		Above: func(d time.Duration) uint64 {
			i, _ := slices.BinarySearch(waits, d)
			return uint64(len(waits) - i)
		},
	}}
	l.waits, l.busy, l.packets = nil, 0, 0
	return load, res, p99
}
