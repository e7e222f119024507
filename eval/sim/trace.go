package sim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/scheduler"
)

// The recorded-trace format: JSON lines. The first line is the header;
// then records in time order per core (cores may interleave); the last
// line is the end record with the trace's duration. Times are ns from
// the trace's start.
//
//	{"taichi_sim_trace":1,"cores":[1,2],"costs":{"poll_ns":1000,...}}
//	{"cpu":1,"k":"arrivals","arrivals":[1200,1900,...]}   packets reaching the loop's ring
//	{"cpu":1,"k":"yield","t":5000}                         the loop blocked
//	{"cpu":1,"k":"wake","t":9000,"cause":"rx","exposed_ns":30000}  ran again, why, exposed wake latency (-1: none)
//	{"cpu":1,"k":"residence","t":100000000,"packets":812,"p99_ns":41000}  a sampling interval
//	{"k":"end","t":2000000000}
const TraceVersion = 1

// Record kinds.
const (
	kindArrivals  = "arrivals"
	kindYield     = "yield"
	kindWake      = "wake"
	kindResidence = "residence"
	kindEnd       = "end"
)

// TraceHeader opens a trace: its cores and the loop costs it was taken
// with (for a real run: measured or configured; the sim replays with them).
type TraceHeader struct {
	Version int   `json:"taichi_sim_trace"`
	Cores   []int `json:"cores"`
	Costs   struct {
		Poll   int64 `json:"poll_ns"`
		Packet int64 `json:"packet_ns"`
		Wake   int64 `json:"wake_ns"`
		Lead   int64 `json:"lead_ns"`
	} `json:"costs"`
}

type traceRecord struct {
	CPU      int                 `json:"cpu"`
	Kind     string              `json:"k"`
	At       int64               `json:"t"`
	Arrivals []int64             `json:"arrivals,omitempty"`
	Cause    scheduler.WakeCause `json:"cause,omitempty"`
	Exposed  int64               `json:"exposed_ns,omitempty"`
	Packets  uint64              `json:"packets,omitempty"`
	P99      int64               `json:"p99_ns,omitempty"`
}

// TraceWriter writes a trace. It is not safe for concurrent use: a
// recorder with several sources serialises them.
type TraceWriter struct {
	w        *bufio.Writer
	enc      *json.Encoder
	arrivals map[int][]int64
	err      error
}

// arrivalBatch is how many arrivals a record holds.
const arrivalBatch = 1024

// NewTraceWriter starts a trace on w for cores, taken with costs.
func NewTraceWriter(w io.Writer, cores []int, c Costs) *TraceWriter {
	bw := bufio.NewWriter(w)
	t := &TraceWriter{w: bw, enc: json.NewEncoder(bw), arrivals: map[int][]int64{}}
	h := TraceHeader{Version: TraceVersion, Cores: slices.Clone(cores)}
	h.Costs.Poll, h.Costs.Packet, h.Costs.Wake, h.Costs.Lead = int64(c.Poll), int64(c.Packet), int64(c.Wake), int64(c.Lead)
	t.put(h)
	return t
}

func (t *TraceWriter) put(v any) {
	if t.err == nil {
		t.err = t.enc.Encode(v)
	}
}

// Arrival records a packet reaching cpu's ring at at.
func (t *TraceWriter) Arrival(cpu int, at time.Duration) {
	b := append(t.arrivals[cpu], int64(at))
	if len(b) >= arrivalBatch {
		t.put(traceRecord{CPU: cpu, Kind: kindArrivals, Arrivals: b})
		b = b[:0]
	}
	t.arrivals[cpu] = b
}

// flushArrivals writes cpu's pending arrivals (readers keep arrivals and
// loop events apart: only each kind's own order matters).
func (t *TraceWriter) flushArrivals(cpu int) {
	if b := t.arrivals[cpu]; len(b) > 0 {
		t.put(traceRecord{CPU: cpu, Kind: kindArrivals, Arrivals: b})
		t.arrivals[cpu] = b[:0]
	}
}

// Yield records cpu's loop blocking at at.
func (t *TraceWriter) Yield(cpu int, at time.Duration) {
	t.flushArrivals(cpu)
	t.put(traceRecord{CPU: cpu, Kind: kindYield, At: int64(at)})
}

// Wake records cpu's loop running again at at, why, and its exposed wake
// latency (negative: none).
func (t *TraceWriter) Wake(cpu int, at time.Duration, cause scheduler.WakeCause, exposed time.Duration) {
	t.flushArrivals(cpu)
	t.put(traceRecord{CPU: cpu, Kind: kindWake, At: int64(at), Cause: cause, Exposed: int64(exposed)})
}

// Residence records a sampling interval of cpu's residence ending at at.
func (t *TraceWriter) Residence(cpu int, at time.Duration, packets uint64, p99 time.Duration) {
	t.flushArrivals(cpu)
	t.put(traceRecord{CPU: cpu, Kind: kindResidence, At: int64(at), Packets: packets, P99: int64(p99)})
}

// Close writes the end record (the trace's duration) and flushes.
func (t *TraceWriter) Close(duration time.Duration) error {
	cpus := make([]int, 0, len(t.arrivals))
	for cpu := range t.arrivals {
		cpus = append(cpus, cpu)
	}
	slices.Sort(cpus)
	for _, cpu := range cpus {
		t.flushArrivals(cpu)
	}
	t.put(traceRecord{Kind: kindEnd, At: int64(duration)})
	if t.err == nil {
		t.err = t.w.Flush()
	}
	return t.err
}

// RecordLoopEvent writes a DP loop's event (from a dp-host segment, as the
// daemon's pump reads them) into t; origin is the CLOCK_MONOTONIC ns the
// trace starts at. This is the recorder the pump can call for a record
// mode; events before origin are dropped.
func RecordLoopEvent(t *TraceWriter, origin int64, ev dataplane.Event) error {
	at := time.Duration(ev.AtNs - origin)
	if at < 0 {
		return nil
	}
	switch ev.Kind {
	case dataplane.KindYield:
		t.Yield(ev.CPU, at)
	case dataplane.KindWake:
		if !ev.Cause.Valid() {
			return fmt.Errorf("dp event: wake without a valid cause (%d)", uint8(ev.Cause))
		}
		t.Wake(ev.CPU, at, ev.Cause, time.Duration(ev.ExposedNs))
	default:
		return fmt.Errorf("dp event: kind %q", ev.Kind)
	}
	return nil
}

// Trace is a recorded trace, read back.
type Trace struct {
	Header   TraceHeader
	Duration time.Duration
	Cores    []CoreTrace
}

// CoreTrace is one core's part of a trace.
type CoreTrace struct {
	CPU       int
	Arrivals  []time.Duration
	Events    []LoopEvent
	Intervals []Interval
}

// LoopEvent is a recorded yield (Cause WakeNone) or wake.
type LoopEvent struct {
	At      time.Duration
	Cause   scheduler.WakeCause
	Exposed time.Duration
}

// Interval is a recorded sampling interval.
type Interval struct {
	At      time.Duration
	Packets uint64
	P99     time.Duration
}

// Costs are the loop costs the trace was taken with.
func (t *Trace) Costs() Costs {
	c := t.Header.Costs
	return Costs{Poll: time.Duration(c.Poll), Packet: time.Duration(c.Packet), Wake: time.Duration(c.Wake), Lead: time.Duration(c.Lead)}
}

// Sources are replays of the trace's arrivals, one per core in header order.
func (t *Trace) Sources() []Arrivals {
	out := make([]Arrivals, len(t.Cores))
	for i := range t.Cores {
		out[i] = NewRecorded(t.Cores[i].Arrivals)
	}
	return out
}

// ReadTrace reads a trace; a bad line is an error naming the line and field.
func ReadTrace(r io.Reader) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		return nil, errors.New("trace: empty (want a header line)")
	}
	t := &Trace{}
	if err := json.Unmarshal(sc.Bytes(), &t.Header); err != nil {
		return nil, fmt.Errorf("trace line 1: header: %w", err)
	}
	if t.Header.Version != TraceVersion {
		return nil, fmt.Errorf("trace line 1: taichi_sim_trace: version %d, want %d", t.Header.Version, TraceVersion)
	}
	if len(t.Header.Cores) == 0 {
		return nil, errors.New("trace line 1: cores: none")
	}
	byCPU := map[int]*CoreTrace{}
	t.Cores = make([]CoreTrace, len(t.Header.Cores))
	for i, cpu := range t.Header.Cores {
		if byCPU[cpu] != nil {
			return nil, fmt.Errorf("trace line 1: cores: cpu %d listed twice", cpu)
		}
		t.Cores[i].CPU = cpu
		byCPU[cpu] = &t.Cores[i]
	}
	ended := false
	for line := 2; sc.Scan(); line++ {
		if ended {
			return nil, fmt.Errorf("trace line %d: a record after the end record", line)
		}
		var rec traceRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		if rec.Kind == kindEnd {
			t.Duration, ended = time.Duration(rec.At), true
			continue
		}
		c := byCPU[rec.CPU]
		if c == nil {
			return nil, fmt.Errorf("trace line %d: cpu: %d is not among the header's cores %v", line, rec.CPU, t.Header.Cores)
		}
		if err := c.add(rec); err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	if !ended {
		return nil, errors.New("trace: no end record (truncated?)")
	}
	return t, nil
}

func (c *CoreTrace) add(rec traceRecord) error {
	at := time.Duration(rec.At)
	switch rec.Kind {
	case kindArrivals:
		for _, a := range rec.Arrivals {
			if n := len(c.Arrivals); n > 0 && time.Duration(a) < c.Arrivals[n-1] {
				return fmt.Errorf("arrivals: %d before the previous %d", a, c.Arrivals[n-1])
			}
			c.Arrivals = append(c.Arrivals, time.Duration(a))
		}
		return nil
	case kindYield, kindWake:
		if n := len(c.Events); n > 0 && at < c.Events[n-1].At {
			return fmt.Errorf("t: %d before the previous event's %d", rec.At, c.Events[n-1].At)
		}
		if (rec.Kind == kindWake) != rec.Cause.Valid() {
			return fmt.Errorf("cause: %q on a %s", rec.Cause, rec.Kind)
		}
		c.Events = append(c.Events, LoopEvent{At: at, Cause: rec.Cause, Exposed: time.Duration(rec.Exposed)})
		return nil
	case kindResidence:
		c.Intervals = append(c.Intervals, Interval{At: at, Packets: rec.Packets, P99: time.Duration(rec.P99)})
		return nil
	}
	return fmt.Errorf("k: unknown record kind %q", rec.Kind)
}
