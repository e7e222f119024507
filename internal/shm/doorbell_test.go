package shm

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// twoViews maps one segment twice, as producer and consumer processes do:
// the futex is keyed by the file, not by the mapping.
func twoViews(t *testing.T) (prod, cons []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seg")
	a, err := Create(path, 4096)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a.Bytes(), b.Bytes()
}

// A consumer asleep on the doorbell is woken by the producer's ring, long
// before its timeout, and finds the record the ring announced.
func TestDoorbellWakesASleepingConsumer(t *testing.T) {
	pm, cm := twoViews(t)
	const ringOff, bellOff, timeout = 256, 0, 20 * time.Second
	prodRing, err := NewRing(pm[ringOff:], 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	consRing, _ := NewRing(cm[ringOff:], 8, 8)
	prodBell, consBell := DoorbellAt(pm, bellOff), DoorbellAt(cm, bellOff)

	woke := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		if err := consBell.Wait(consRing.Pending, timeout); err != nil {
			t.Error(err)
		}
		woke <- time.Since(start)
	}()
	for prodBell.word.Load() != 1 { // the consumer has armed the bell
		runtime.Gosched()
	}
	prodRing.Push(make([]byte, 8))
	if err := prodBell.Ring(); err != nil {
		t.Fatal(err)
	}
	if slept := <-woke; slept >= timeout {
		t.Fatalf("the consumer slept its whole timeout (%v): the ring did not wake it", slept)
	}
	if !consRing.Pending() {
		t.Fatal("woken without the record")
	}
	if prodBell.word.Load() != 0 {
		t.Error("the bell stays armed after the consumer woke")
	}
}

// Work queued before the consumer arms the bell is never slept on.
func TestDoorbellNeverSleepsOnQueuedWork(t *testing.T) {
	pm, cm := twoViews(t)
	prodRing, _ := NewRing(pm[256:], 8, 8)
	consRing, _ := NewRing(cm[256:], 8, 8)
	prodBell, consBell := DoorbellAt(pm, 0), DoorbellAt(cm, 0)
	prodRing.Push(make([]byte, 8))
	if err := prodBell.Ring(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- consBell.Wait(consRing.Pending, time.Hour) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the consumer slept with a record queued")
	}
}

func TestDoorbellRejectsMisalignedWord(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a misaligned doorbell")
		}
	}()
	DoorbellAt(make([]byte, 64), 2)
}
