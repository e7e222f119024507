package daemon

import (
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// A DP core's own packet work (the NIC's or a sender's softirq: the probe's
// XDP program, routing, delivery to the loop's socket) runs in softirq
// context, and what the kernel defers runs in that core's ksoftirqd, a
// SCHED_OTHER thread. A SCHED_FIFO loop woken by the probe preempts it and
// polls an empty socket while the very packet it waits for sits in
// ksoftirqd's queue: each wake lets ksoftirqd deliver about one packet, the
// backlog grows, and a packet waited 0.87 s in one run. Above the loop,
// ksoftirqd delivers first and the loop finds the packet.

// softirqThread is one DP core's ksoftirqd and the class it had before.
type softirqThread struct {
	cpu, tid int
	was      linuxsched.Class
}

// softirqPriority is the priority for cpu's ksoftirqd: the configured one,
// or one above every DP thread the config runs there (0: leave it alone).
func (d *Daemon) softirqPriority(cpu int) int {
	p := d.cfg.Dataplane.SoftirqPriority
	if p != 0 {
		return max(p, 0)
	}
	top := 0
	for _, l := range d.cfg.Dataplane.Loops {
		if l.CPU == cpu {
			top = max(top, l.Priority)
		}
	}
	for _, a := range d.cfg.Dataplane.DPDK {
		for _, c := range a.CPUs {
			if c == cpu {
				top = max(top, a.Priority)
			}
		}
	}
	if top == 0 {
		return 0 // no DP thread of ours runs there
	}
	return min(top+1, 99)
}

// raiseSoftirq makes each DP core's ksoftirqd SCHED_FIFO above the DP
// threads there (dataplane.softirq_priority). It is kept across daemon
// restarts and crashes on purpose (a real-time ksoftirqd on a DP core is
// how DP hosts are tuned anyway); Close puts back what the kernel had.
func (d *Daemon) raiseSoftirq() {
	for _, cpu := range d.cfg.DPCPUs {
		prio := d.softirqPriority(cpu)
		if prio == 0 {
			continue
		}
		tid, err := linuxsched.KsoftirqdTID(cpu)
		if err != nil {
			d.log.Warn("ksoftirqd not raised: packet work deferred to it may wait behind the DP loop", "cpu", cpu, "err", err)
			continue
		}
		was, err := linuxsched.Get(tid)
		if err != nil {
			d.log.Warn("ksoftirqd not raised", "cpu", cpu, "tid", tid, "err", err)
			continue
		}
		now := linuxsched.FIFO(prio)
		switch {
		case was == now:
			// Raised by a run that did not get to Close (or by hand to
			// the same value): what to put back is the kernel's class.
			was = linuxsched.Other(0)
		case was.Policy == now.Policy:
			d.log.Info("ksoftirqd is real-time already: left as it is", "cpu", cpu, "tid", tid, "class", was)
			continue
		}
		if err := linuxsched.Set(tid, now); err != nil {
			d.log.Warn("ksoftirqd not raised", "cpu", cpu, "tid", tid, "err", err)
			continue
		}
		d.softirq = append(d.softirq, softirqThread{cpu: cpu, tid: tid, was: was})
		d.log.Info("ksoftirqd raised above the DP threads", "cpu", cpu, "tid", tid, "class", now)
	}
}

// restoreSoftirq gives ksoftirqd back the class the kernel gave it.
func (d *Daemon) restoreSoftirq() {
	for _, s := range d.softirq {
		if err := linuxsched.Set(s.tid, s.was); err != nil {
			d.log.Warn("ksoftirqd class not restored", "cpu", s.cpu, "tid", s.tid, "err", err)
		}
	}
	d.softirq = nil
}
