package blocker

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// Clock is where the Confiner takes time from (scheduler.RealClock and
// scheduler.FakeClock satisfy it).
type Clock interface{ Now() time.Time }

// Actuator moves processes; vcpu.Pool's Confine and Release satisfy it.
type Actuator interface {
	// Confine keeps a process on the CP cores; false with a nil error
	// means it vanished.
	Confine(pid int) (bool, error)
	// Release lets it borrow DP cores again; a vanished process is not an
	// error.
	Release(pid int) error
	// Confined lists the confined processes, including children they
	// forked (which start confined).
	Confined() ([]int, error)
}

// Processes finds the live processes (thread group ids) that run a command:
// the candidates for confining a blocker's siblings.
type Processes interface {
	ByCommand(comm string) ([]int, error)
}

// historyLen is how many releases Released keeps.
const historyLen = 32

// Blocker is what the Confiner knows about one blamed process.
type Blocker struct {
	TGID     int
	Comm     string
	CgroupID uint64
	// Kernel: a kernel thread; reported, never moved.
	Kernel bool
	// Count blames, InKernel of them caught in a kernel path; Worst and
	// Total are the DP delay they caused.
	Count, InKernel int
	Worst, Total    time.Duration
	First, Last     time.Time
	// ConfinedUntil is when it will be released; zero when not confined.
	ConfinedUntil time.Time
	// Error is the last refusal or failure moving it ("" when none).
	Error string
}

// Command is a learned blocking command: processes running it are
// confined until the SLO rule releases it, including new ones at exec.
type Command struct {
	Comm string
	// CgroupIDs where its blocking processes ran (cgroup v2 ids; empty
	// when unknown). A new process matches when its cgroup is one of them,
	// or either side does not know its cgroup.
	CgroupIDs []uint64
	Backoff   time.Duration // the current (last applied) back-off
	// Until is the end of the current back-off; zero when not confined.
	// Past it the command stays confined until ReleaseOne picks it.
	Until    time.Time
	Strikes  int       // confinements so far (doubling)
	Released time.Time // last release
	PIDs     []int     // processes confined under it now
	// Why is what the last confinement answered.
	Why Reason

	refused map[int]bool // not retried under this back-off
}

// Reason is why the SLO rule confined a command: the blamed delay of one
// process of it on a DP core over the window, when that core's packets
// used Budget of the SLO.
type Reason struct {
	At     time.Time
	CPU    int
	TGID   int
	Comm   string
	Blamed time.Duration // in-kernel delay of the core's DP threads within the window
	Blames int
	Window time.Duration
	Budget float64
}

// Release is one command released by the SLO rule.
type Release struct {
	Comm     string
	At       time.Time
	Confined time.Duration // how long it had been confined
	Why      Reason        // what confined it
}

// Change is one process confined or released.
type Change struct {
	TGID     int
	Comm     string
	Confined bool      // true: confined; false: released
	Until    time.Time // end of the back-off (Confined only)
}

// Confiner turns blame into confinement. It is pure policy: all time comes
// from its Clock and all moves go through its Actuator, so tests drive it
// with a fake clock. Methods are safe for concurrent use.
type Confiner struct {
	policy Policy
	clock  Clock
	act    Actuator
	procs  Processes

	notify func(Change)

	mu      sync.Mutex
	changes []Change // made under mu, told to notify after it
	active  bool
	// groupMayHold: the confined group may hold processes (true until a
	// tick reads it empty; set again by every confinement).
	groupMayHold bool
	blockers     map[int]*tracked
	commands     map[string]*Command
	owner        map[int]string // confined tgid -> command it is confined under
	keep         time.Duration  // span of blame kept (the longest window asked)
	released     []Release      // the last historyLen releases, oldest first
}

// NewConfiner returns an active Confiner after checking the policy (zero
// fields take their defaults).
func NewConfiner(p Policy, clock Clock, act Actuator, procs Processes) (*Confiner, error) {
	p = p.withDefaults()
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("blocker: bad policy: %w", err)
	}
	return &Confiner{policy: p, clock: clock, act: act, procs: procs, active: true, groupMayHold: true, keep: p.Window,
		blockers: map[int]*tracked{}, commands: map[string]*Command{}, owner: map[int]string{}}, nil
}

// OnChange sets a function told of every confinement and release, after
// the call that made it returns its lock (it may call back into the
// Confiner). Set it before use; nil turns it off.
func (c *Confiner) OnChange(f func(Change)) { c.notify = f }

// unlock releases mu and tells notify what changed meanwhile.
func (c *Confiner) unlock() {
	changes := c.changes
	c.changes = nil
	c.mu.Unlock()
	if c.notify != nil {
		for _, ch := range changes {
			c.notify(ch)
		}
	}
}

// Policy returns the policy in force (defaults filled in).
func (c *Confiner) Policy() Policy { return c.policy }

// SetActive turns confinement on or off (the lending policy decides:
// only one that lends with guards confines). Turning it off releases every
// confined process and forgets the commands; blame is still recorded.
func (c *Confiner) SetActive(on bool) error {
	c.mu.Lock()
	defer c.unlock()
	if c.active == on {
		return nil
	}
	c.active = on
	if on {
		return nil
	}
	return c.forget()
}

// Forget releases every confined process and forgets every command,
// whether confinement is on or off: the SLO rule that confined them judged
// a budget horizon that a policy switch or a new SLO starts afresh, and a
// confinement carried over would be judged by nothing (it would wait for a
// quiet horizon to be released).
func (c *Confiner) Forget() error {
	c.mu.Lock()
	defer c.unlock()
	return c.forget()
}

func (c *Confiner) forget() error {
	var errs []error
	for _, comm := range c.sortedCommands() {
		errs = append(errs, c.releaseCommand(comm))
		delete(c.commands, comm)
	}
	return errors.Join(errs...)
}

// Active reports whether confinement is on.
func (c *Confiner) Active() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

// Observe takes one tracer event: blame is aggregated per process (for
// status and ConfineWorst); an exec of a confined command confines the new
// process at once. Errors name the moves that failed; the state is updated
// either way.
func (c *Confiner) Observe(ev Event) error {
	c.mu.Lock()
	defer c.unlock()
	now := c.clock.Now()
	switch ev.Kind {
	case KindExec:
		return c.onExec(ev, now)
	case KindBlame:
		return c.onBlame(ev, now)
	}
	return nil
}

// Released returns the last releases, oldest first.
func (c *Confiner) Released() []Release {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.released)
}

// Tick runs the periodic work (every Policy.Recheck): processes that now
// run a confined command are confined too; commands and processes clear
// for long are forgotten. Releases are the SLO rule's (ReleaseOne).
func (c *Confiner) Tick() error {
	c.mu.Lock()
	defer c.unlock()
	now := c.clock.Now()
	var errs []error
	for _, comm := range c.sortedCommands() {
		cmd := c.commands[comm]
		switch {
		case cmd.Until.IsZero():
			if now.Sub(cmd.Released) > c.policy.MaxBackoff {
				delete(c.commands, comm) // clear for long: forgotten
			}
		case c.active:
			errs = append(errs, c.confineSiblings(cmd))
		}
	}
	if c.confining() || c.groupMayHold {
		errs = append(errs, c.adoptChildren())
	}
	for tgid, b := range c.blockers {
		b.prune(now, c.keep)
		if b.ConfinedUntil.IsZero() && now.Sub(b.Last) > c.policy.MaxBackoff {
			delete(c.blockers, tgid)
		}
	}
	return errors.Join(errs...)
}

// confining reports whether anything is confined or a back-off runs. The
// confined group is read on a tick only then, or while it may still hold
// children of processes released since (groupMayHold): an idle confiner
// costs no cgroup read every Recheck. A previous run's leftovers are
// released by the pool when it starts.
func (c *Confiner) confining() bool {
	if len(c.owner) > 0 {
		return true
	}
	for _, cmd := range c.commands {
		if !cmd.Until.IsZero() {
			return true
		}
	}
	return false
}

func (c *Confiner) sortedCommands() []string {
	names := make([]string, 0, len(c.commands))
	for n := range c.commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Blockers returns the blamed processes, most total delay first.
func (c *Confiner) Blockers() []Blocker {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Blocker, 0, len(c.blockers))
	for _, b := range c.blockers {
		out = append(out, b.Blocker)
	}
	// Confined processes that were never blamed themselves (siblings,
	// exec'd) show up too.
	for tgid, comm := range c.owner {
		if c.blockers[tgid] == nil {
			out = append(out, Blocker{TGID: tgid, Comm: comm, ConfinedUntil: c.commands[comm].Until})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Total != out[j].Total {
			return out[i].Total > out[j].Total
		}
		return out[i].TGID < out[j].TGID
	})
	return out
}

// Commands returns the learned commands, by name.
func (c *Confiner) Commands() []Command {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Command
	for _, n := range c.sortedCommands() {
		cmd := *c.commands[n]
		cmd.refused = nil
		cmd.CgroupIDs = slices.Clone(cmd.CgroupIDs)
		cmd.PIDs = slices.Clone(cmd.PIDs)
		out = append(out, cmd)
	}
	return out
}

// WatchedCommands are the confined commands: the tracer should report
// their execs (Tracer.SetCommands).
func (c *Confiner) WatchedCommands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.sortedCommands() {
		if !c.commands[n].Until.IsZero() && c.active {
			out = append(out, n)
		}
	}
	return out
}

// ConfinedCount is how many processes are confined now.
func (c *Confiner) ConfinedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.owner)
}
