package dataplane

import (
	"time"
	_ "unsafe" // for go:linkname
)

// nanotime is the runtime's CLOCK_MONOTONIC read through the vDSO (tens of
// ns, no allocation); the runtime keeps it linkable for such uses.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// MonotonicNow returns CLOCK_MONOTONIC in ns, the clock of every stamp in
// this package (and of bpf_ktime_get_ns, so probe stamps compare directly).
func MonotonicNow() int64 { return nanotime() }

// realToMonotonic converts a CLOCK_REALTIME ns stamp (AF_PACKET ring
// timestamps) to CLOCK_MONOTONIC by the clocks' current offset.
func realToMonotonic(realNs int64) int64 {
	mono := nanotime()
	real := time.Now().UnixNano()
	return realNs - (real - mono)
}

// monotonicToReal is the inverse of realToMonotonic.
func monotonicToReal(monoNs int64) int64 {
	mono := nanotime()
	real := time.Now().UnixNano()
	return monoNs + (real - mono)
}
