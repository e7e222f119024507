package scheduler

import (
	"encoding/json"
	"testing"
)

func TestWakeCauseConversions(t *testing.T) {
	for _, w := range []WakeCause{WakeRx, WakeProbe, WakeTimeout} {
		if !w.Valid() {
			t.Errorf("%v not valid", w)
		}
		got, err := ParseWakeCause(w.String())
		if err != nil || got != w {
			t.Errorf("ParseWakeCause(%q) = %v, %v", w.String(), got, err)
		}
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		var back WakeCause
		if err := json.Unmarshal(b, &back); err != nil || back != w {
			t.Errorf("JSON %s read back as %v, %v", b, back, err)
		}
	}
	for _, w := range []WakeCause{WakeNone, numWakeCauses, 255} {
		if w.Valid() {
			t.Errorf("%v valid", w)
		}
	}
	if _, err := json.Marshal(WakeCause(200)); err == nil {
		t.Error("an unknown cause marshals")
	}
	for _, s := range []string{"none", "RX", "slice_end", "timeout "} {
		if _, err := ParseWakeCause(s); err == nil {
			t.Errorf("ParseWakeCause(%q) accepted", s)
		}
	}
	var w WakeCause
	if err := json.Unmarshal([]byte(`"later"`), &w); err == nil {
		t.Error(`"later" unmarshals`)
	}
}
