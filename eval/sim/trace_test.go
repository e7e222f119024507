package sim

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
)

const header = `{"taichi_sim_trace":1,"cores":[1,2],"costs":{"poll_ns":1000,"packet_ns":1000,"wake_ns":30000,"lead_ns":3000}}`

// TestReadTraceRejects: a bad trace is an error naming the line and the
// field at fault.
func TestReadTraceRejects(t *testing.T) {
	end := `{"k":"end","t":1000}`
	for want, body := range map[string]string{
		"line 1: taichi_sim_trace":   `{"taichi_sim_trace":2,"cores":[1]}` + "\n" + end,
		"line 1: cores: none":        `{"taichi_sim_trace":1,"cores":[]}` + "\n" + end,
		"line 1: cores: cpu 1":       `{"taichi_sim_trace":1,"cores":[1,1]}` + "\n" + end,
		"line 2: cpu: 3":             header + "\n" + `{"cpu":3,"k":"yield","t":5}` + "\n" + end,
		"line 2: k: unknown":         header + "\n" + `{"cpu":1,"k":"nap","t":5}` + "\n" + end,
		"line 3: arrivals: 5":        header + "\n" + `{"cpu":1,"k":"arrivals","arrivals":[10,20]}` + "\n" + `{"cpu":1,"k":"arrivals","arrivals":[5]}` + "\n" + end,
		"line 2: cause":              header + "\n" + `{"cpu":1,"k":"wake","t":5}` + "\n" + end,
		"line 3: t: 4":               header + "\n" + `{"cpu":1,"k":"yield","t":5}` + "\n" + `{"cpu":1,"k":"wake","t":4,"cause":"rx"}` + "\n" + end,
		"line 2: unknown wake cause": header + "\n" + `{"cpu":1,"k":"wake","t":5,"cause":"sneeze"}` + "\n" + end,
		"no end record":              header + "\n" + `{"cpu":1,"k":"yield","t":5}`,
		"line 3: a record after":     header + "\n" + end + "\n" + `{"cpu":1,"k":"yield","t":5}`,
	} {
		_, err := ReadTrace(strings.NewReader(body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error with %q, got %v", want, err)
		}
	}
}

// TestRecordLoopEvent: the dp-host recorder writes a DP loop's yields and
// wakes relative to the trace's origin, and refuses a wake without cause.
func TestRecordLoopEvent(t *testing.T) {
	var buf bytes.Buffer
	w := NewTraceWriter(&buf, []int{1}, DefaultCosts)
	const origin = 1_000_000
	for _, ev := range []dataplane.Event{
		{CPU: 1, Kind: dataplane.KindYield, AtNs: origin - 5}, // before the trace: dropped
		{CPU: 1, Kind: dataplane.KindYield, AtNs: origin + 100},
		{CPU: 1, Kind: dataplane.KindWake, AtNs: origin + 900, Cause: scheduler.WakeProbe, ExposedNs: 0},
	} {
		if err := RecordLoopEvent(w, origin, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := RecordLoopEvent(w, origin, dataplane.Event{CPU: 1, Kind: dataplane.KindWake, AtNs: origin + 1000}); err == nil {
		t.Fatal("a wake without a cause recorded")
	}
	w.Arrival(1, 950*time.Nanosecond)
	if err := w.Close(time.Millisecond); err != nil {
		t.Fatal(err)
	}
	tr, err := ReadTrace(&buf)
	if err != nil {
		t.Fatal(err)
	}
	c := tr.Cores[0]
	if len(c.Events) != 2 || c.Events[0].At != 100 || c.Events[1].At != 900 || c.Events[1].Cause != scheduler.WakeProbe ||
		len(c.Arrivals) != 1 || tr.Duration != time.Millisecond {
		t.Fatalf("read back %+v, duration %v", c, tr.Duration)
	}
	if s := tr.Summary(); s.LentS != 800e-9 || s.Wakes["probe"] != 1 {
		t.Fatalf("summary %+v: want 800 ns lent, one probe wake", s)
	}
}
