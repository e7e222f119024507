package scheduler

import (
	"encoding/json"
	"testing"
)

func TestStateAndHoldJSONRoundTrip(t *testing.T) {
	for s := DPActive; s < numStates; s++ {
		b, _ := json.Marshal(s)
		var back State
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("state %v: %s -> %v, %v", s, b, back, err)
		}
	}
	for h := HoldNone; h < numHolds; h++ {
		b, _ := json.Marshal(h)
		var back Hold
		if err := json.Unmarshal(b, &back); err != nil || back != h {
			t.Errorf("hold %v: %s -> %v, %v", h, b, back, err)
		}
	}
	var s State
	if err := json.Unmarshal([]byte(`"NAPPING"`), &s); err == nil {
		t.Error("unknown state accepted")
	}
}
