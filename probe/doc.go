// Package probe tells ahead of a data-plane loop that packets are coming for
// its core. Backends sit behind one Probe interface: "xdp" (an eBPF program at
// the RX hook of the interface where packets enter the NIC, per-queue counters
// in an mmapable map, one ring buffer per DP core that the DP loop waits on
// directly) and "counters" (interface statistics polled at an interval, for
// NICs whose queues XDP cannot reach). Both give per-core WakeSources that
// satisfy dataplane.WakeSource structurally.
package probe
