package kmod

import (
	"sync"
)

// WakeSource lets a DP loop that blocks in poll/epoll on its socket also
// wake on kicks: it has the shape of dataplane.WakeSource (FD, Arm, Disarm)
// without importing it. It owns its own Device (one fd per DP thread, since
// the fd is readable for the DP thread registered through it).
//
// The DP thread registers itself at its first Arm, which runs on the loop's
// own pinned thread. If registration fails (thread not pinned, CPU taken),
// the fd simply never becomes readable: the loop keeps its socket and its
// timeout, it only loses the early kick; Err reports why.
type WakeSource struct {
	d     *Device
	mu    sync.Mutex
	armed bool // registration attempted
	err   error
}

// NewWakeSource opens the device for one DP loop.
func NewWakeSource() (*WakeSource, error) {
	d, err := Open()
	if err != nil {
		return nil, err
	}
	return &WakeSource{d: d}, nil
}

// FD is pollable: readable while a kick for the loop's CPU is pending.
func (w *WakeSource) FD() int { return w.d.FD() }

// Arm registers the calling (DP loop) thread on first use; afterwards
// kicks are always reported, so there is nothing to arm.
func (w *WakeSource) Arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed {
		w.armed = true
		_, w.err = w.d.Register()
	}
}

// Disarm consumes a pending kick and returns its CLOCK_MONOTONIC stamp.
// Call it on the DP loop's thread.
func (w *WakeSource) Disarm() (stampNs int64, ok bool) {
	if w.Err() != nil {
		return 0, false
	}
	wk, err := w.d.Poll()
	if err != nil || !wk.Kicked {
		return 0, false
	}
	return wk.KickNs, true
}

// Err is the registration error, if the first Arm failed.
func (w *WakeSource) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Device is the underlying device (for Stats, Blockers, Kick).
func (w *WakeSource) Device() *Device { return w.d }

// Close unregisters the DP thread (by closing its fd).
func (w *WakeSource) Close() error { return w.d.Close() }
