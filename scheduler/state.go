package scheduler

import "fmt"

// State is where a DP core is in the lending cycle.
type State int

// The states of a DP core.
const (
	// DPActive: the DP loop polls and handles packets.
	DPActive State = iota
	// Idle: the loop reports empty polls, or it blocked on a core that is not
	// in the CP cpuset (blocked but not lent).
	Idle
	// Lent: the loop blocked while the core is in the CP cpuset: CP runs here.
	Lent
	// Reclaiming: the loop has been told to wake; DP owns the core again once
	// it reports running.
	Reclaiming
	numStates
)

var stateNames = [numStates]string{"DP_ACTIVE", "IDLE", "LENT", "RECLAIMING"}

func (s State) String() string { return enumName(stateNames[:], s, "State") }

// MarshalText makes states readable in JSON status.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state back (status clients decode the daemon's JSON).
func (s *State) UnmarshalText(b []byte) error { return parseEnum(stateNames[:], b, "state", s) }

// enumName is the name of an enum value of the named type, or
// "Type(n)" for one out of range.
func enumName[T ~int](names []string, v T, typ string) string {
	if v >= 0 && int(v) < len(names) {
		return names[v]
	}
	return fmt.Sprintf("%s(%d)", typ, int(v))
}

// parseEnum sets *v to the value named b.
func parseEnum[T ~int](names []string, b []byte, what string, v *T) error {
	for i, n := range names {
		if n == string(b) {
			*v = T(i)
			return nil
		}
	}
	return fmt.Errorf("unknown %s %q", what, b)
}

// Transitions is the table of allowed state changes; any other change an
// event would cause is counted as an invalid transition and ignored.
var Transitions = map[State][]State{
	DPActive:   {Idle},
	Idle:       {DPActive, Lent},
	Lent:       {Reclaiming},
	Reclaiming: {DPActive},
}

func transitionAllowed(from, to State) bool {
	for _, s := range Transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// input is what drives the state machine; each (state, input) pair has one
// row in handle's switch in engine.go, summarised here:
//
//	state       idle   busy       yield               wake                 reclaim     reclaim-timeout
//	DP_ACTIVE   IDLE   -          IDLE, then as IDLE  invalid              -           -
//	IDLE        -      DP_ACTIVE  LENT if in cpuset,  DP_ACTIVE            -           -
//	                              else stay (blocked)
//	LENT        inv.   invalid    invalid             RECLAIMING,DP_ACTIVE RECLAIMING  -
//	RECLAIMING  inv.   invalid    invalid             DP_ACTIVE            -           DP_ACTIVE
//
// "-" means no change (not an error): repeated reports and stale timers.
type input int

const (
	inIdle input = iota
	inBusy
	inYield
	inWake
	inReclaim
	inReclaimTimeout
)

// Cause says why a lent core went back to DP.
type Cause int

// Reclaim causes.
const (
	CauseProbe    Cause = iota // the probe warned of packets (early reclaim)
	CauseRx                    // the packet itself woke the loop (its socket)
	CauseSliceEnd              // the lent slice expired undisturbed
	CauseGuard                 // the SLO guard benched the core
	CauseLoad                  // sustained DP load: core taken out of the CP cpuset
	CausePolicy                // a policy switch took the core out of the CP cpuset
	numCauses
)

var causeNames = [numCauses]string{"probe", "rx", "slice_end", "guard", "load", "policy"}

func (c Cause) String() string { return enumName(causeNames[:], c, "Cause") }

// Causes lists every reclaim cause, in counter order.
func Causes() []Cause {
	out := make([]Cause, numCauses)
	for i := range out {
		out[i] = Cause(i)
	}
	return out
}

// WakeCause is what the DP loop says woke it. It is the one type for the
// value from the loop (dataplane.Event.Cause) through the DP host's shared
// segment (one byte: the value itself) to the engine; it lives here, the
// lowest package that needs it. Its conversions (String, ParseWakeCause,
// text for JSON, Valid for the wire byte) are all below.
type WakeCause uint8

// Wake causes reported by the DP loop. The values are the wire encoding in
// the DP host's event records: never renumber them.
const (
	WakeNone    WakeCause = iota // not a wake (a yield event); invalid on a wake
	WakeRx                       // its socket had a packet
	WakeProbe                    // a wake source (probe, kick, Actuator.Wake) fired
	WakeTimeout                  // its bounded wait (the slice) expired
	numWakeCauses
)

var wakeCauseNames = [numWakeCauses]string{"", "rx", "probe", "timeout"}

// Valid reports whether w is one of the wake causes a wake event carries
// (WakeRx, WakeProbe, WakeTimeout).
func (w WakeCause) Valid() bool { return w > WakeNone && w < numWakeCauses }

func (w WakeCause) String() string {
	if w == WakeNone {
		return "none"
	}
	if w.Valid() {
		return wakeCauseNames[w]
	}
	return fmt.Sprintf("WakeCause(%d)", uint8(w))
}

// ParseWakeCause maps the DP loop's cause names (rx, probe, timeout).
func ParseWakeCause(s string) (WakeCause, error) {
	for w := WakeRx; w < numWakeCauses; w++ {
		if wakeCauseNames[w] == s {
			return w, nil
		}
	}
	return WakeNone, fmt.Errorf("unknown wake cause %q (want rx, probe or timeout)", s)
}

// MarshalText writes the cause's name ("" for WakeNone); an unknown value
// is an error, never a silent "".
func (w WakeCause) MarshalText() ([]byte, error) {
	if w != WakeNone && !w.Valid() {
		return nil, fmt.Errorf("unknown wake cause %d", uint8(w))
	}
	return []byte(wakeCauseNames[w]), nil
}

// UnmarshalText reads a name written by MarshalText.
func (w *WakeCause) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*w = WakeNone
		return nil
	}
	c, err := ParseWakeCause(string(b))
	if err != nil {
		return err
	}
	*w = c
	return nil
}

// Hold says why a core is not lending at the moment.
type Hold int

// Hold reasons.
const (
	HoldNone     Hold = iota
	HoldPolicy        // the policy never lends (static)
	HoldGuard         // benched by the SLO guard
	HoldLoad          // sustained high DP load
	HoldFlap          // too many lend cycles: kept in DP for a while (cpuset untouched)
	HoldProbe         // the core's probe failed: held static
	HoldRealtime      // the DP loop ran real-time too long: kept in DP for a while
	numHolds
)

var holdNames = [numHolds]string{"", "policy", "guard", "load", "flap", "probe", "realtime"}

func (h Hold) String() string { return enumName(holdNames[:], h, "Hold") }

// MarshalText makes holds readable in JSON status.
func (h Hold) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads a hold back.
func (h *Hold) UnmarshalText(b []byte) error { return parseEnum(holdNames[:], b, "hold", h) }
