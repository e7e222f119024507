package shm

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// twoViews maps one segment twice, as producer and consumer processes do:
// the futex is keyed by the file, not by the mapping.
func twoViews(t *testing.T) (prod, cons []byte, bell string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "seg")
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
	return a.Bytes(), b.Bytes(), filepath.Join(dir, "seg.bell")
}

// bells opens the producer's and the consumer's side of one doorbell.
func bells(t *testing.T, pm, cm []byte, off int, path string) (prod, cons *Doorbell) {
	t.Helper()
	prod, err := OpenDoorbell(pm, off, path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prod.Close() })
	cons, err = OpenDoorbell(cm, off, path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cons.Close() })
	return prod, cons
}

// A consumer asleep on the doorbell is woken by the producer's ring, long
// before its timeout, and finds the record the ring announced.
func TestDoorbellWakesASleepingConsumer(t *testing.T) {
	pm, cm, path := twoViews(t)
	const ringOff, bellOff, timeout = 256, 0, 20 * time.Second
	prodRing, err := NewRing(pm[ringOff:], 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	consRing, _ := NewRing(cm[ringOff:], 8, 8)
	prodBell, consBell := bells(t, pm, cm, bellOff, path)

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
	if _, err := prodBell.Ring(); err != nil {
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
	pm, cm, path := twoViews(t)
	prodRing, _ := NewRing(pm[256:], 8, 8)
	consRing, _ := NewRing(cm[256:], 8, 8)
	prodBell, consBell := bells(t, pm, cm, 0, path)
	prodRing.Push(make([]byte, 8))
	if _, err := prodBell.Ring(); err != nil {
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

// A quiet producer lets the consumer sleep its timeout and no longer, and
// a doorbell path that is not a FIFO is refused by name.
func TestDoorbellTimesOutAndRefusesAFile(t *testing.T) {
	pm, cm, path := twoViews(t)
	_, consBell := bells(t, pm, cm, 0, path)
	done := make(chan error, 1)
	go func() { done <- consBell.Wait(func() bool { return false }, 10*time.Millisecond) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a 10ms wait did not end")
	}
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDoorbell(pm, 0, file, false); err == nil || !strings.Contains(err.Error(), "not a FIFO") {
		t.Fatalf("a plain file as the doorbell: %v", err)
	}
	if _, err := OpenDoorbell(pm, 2, path, false); err == nil {
		t.Fatal("a misaligned doorbell word accepted")
	}
}
