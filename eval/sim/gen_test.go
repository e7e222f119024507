package sim

import (
	"strings"
	"testing"
	"time"
)

func take(t *testing.T, a Arrivals, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, n)
	for i := range out {
		at, ok := a.Next()
		if !ok {
			t.Fatalf("source ended after %d packets", i)
		}
		if i > 0 && at < out[i-1] {
			t.Fatalf("packet %d at %v before the previous %v", i, at, out[i-1])
		}
		out[i] = at
	}
	return out
}

func gen(t *testing.T, p Pattern, rate float64, seed uint64) Arrivals {
	t.Helper()
	return genShaped(t, p, rate, Shape{}, seed)
}

func genShaped(t *testing.T, p Pattern, rate float64, sh Shape, seed uint64) Arrivals {
	t.Helper()
	a, err := Synthetic(p, rate, sh, seed)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSyntheticDeterministicAndAtRate: a seed gives the same times every
// time, another seed other times, and every pattern's mean rate is the
// rate asked for (within 5% over 200k packets: 20 on/off cycles, 10 days
// of a 200 ms diurnal ramp).
func TestSyntheticDeterministicAndAtRate(t *testing.T) {
	const rate, n = 100000.0, 200000
	sh := Shape{Period: 200 * time.Millisecond}
	for _, p := range Patterns {
		a, b, c := take(t, genShaped(t, p, rate, sh, 7), n), take(t, genShaped(t, p, rate, sh, 7), n), take(t, genShaped(t, p, rate, sh, 8), 100)
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s: seed 7 gave %v then %v at packet %d", p, a[i], b[i], i)
			}
		}
		if same := func() bool {
			for i := range c {
				if c[i] != a[i] {
					return false
				}
			}
			return true
		}(); same {
			t.Errorf("%s: seeds 7 and 8 gave the same times", p)
		}
		got := float64(n) / a[n-1].Seconds()
		if got < 0.95*rate || got > 1.05*rate {
			t.Errorf("%s: mean rate %.0f/s, want %.0f ±5%%", p, got, rate)
		}
	}
}

// TestSyntheticShapes: on/off is silent off its bursts, lead bursts are
// spaced by the lead, the diurnal ramp is busier at its peak than at its
// trough.
func TestSyntheticShapes(t *testing.T) {
	sh := DefaultShape
	for _, at := range take(t, gen(t, OnOff, 50000, 1), 50000) {
		if at%(sh.On+sh.Off) >= sh.On {
			t.Fatalf("on/off packet at %v, in a silence", at)
		}
	}
	lb := take(t, gen(t, LeadBursts, 50000, 1), 8*100)
	for i := 1; i < len(lb); i++ {
		if gap := lb[i] - lb[i-1]; i%sh.Burst != 0 && gap != sh.Lead {
			t.Fatalf("packet %d: %v after the previous, inside a burst (want the lead %v)", i, gap, sh.Lead)
		}
	}
	var trough, peak int // first and middle tenth of the day
	for _, at := range take(t, gen(t, Diurnal, 20000, 1), 200000) {
		switch in := at % sh.Period; {
		case in < sh.Period/10:
			trough++
		case in >= sh.Period*45/100 && in < sh.Period*55/100:
			peak++
		}
	}
	if peak < 3*trough {
		t.Errorf("diurnal: %d packets around the peak, %d around the trough: want the peak at least 3× busier", peak, trough)
	}
}

func TestSyntheticRejects(t *testing.T) {
	if _, err := Synthetic(Poisson, 0, Shape{}, 1); err == nil || !strings.HasPrefix(err.Error(), "rate:") {
		t.Errorf("rate 0: %v", err)
	}
	if _, err := Synthetic("bursty", 10, Shape{}, 1); err == nil || !strings.HasPrefix(err.Error(), "pattern:") {
		t.Errorf("unknown pattern: %v", err)
	}
	// 8 packets 3 µs apart take 21 µs: 1M packets/s cannot come in them.
	if _, err := Synthetic(LeadBursts, 1e6, Shape{}, 1); err == nil || !strings.HasPrefix(err.Error(), "rate:") {
		t.Errorf("rate beyond lead bursts: %v", err)
	}
}
