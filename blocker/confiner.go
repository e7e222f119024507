package blocker

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/internal/fielderr"
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

// Policy configures a Confiner.
type Policy struct {
	// MinBlames is the floor under the SLO rule: a process is a candidate
	// for ConfineWorst only with at least this many in-kernel blames on the
	// core within the window asked.
	MinBlames int
	// Window is the least span of blame kept per process (ConfineWorst may
	// ask for a longer one, which is then kept).
	Window time.Duration
	// Backoff is the first confinement of a command; each repeat doubles
	// it, up to MaxBackoff. A command that stayed clear for MaxBackoff
	// after its release starts again at Backoff. A command is released
	// (ReleaseOne) only after its back-off.
	Backoff, MaxBackoff time.Duration
	// Recheck is how often Tick should run: same-command processes that
	// appeared meanwhile, and forgetting.
	Recheck time.Duration
	// MaxTracked bounds the table of blamed processes (oldest dropped).
	MaxTracked int
}

// Defaults for zero Policy fields.
const (
	DefaultMinBlames  = 1
	DefaultWindow     = time.Second
	DefaultBackoff    = 10 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultRecheck    = 100 * time.Millisecond
	DefaultMaxTracked = 256
)

// maxWindowBlames bounds the blames kept per process (oldest dropped).
const maxWindowBlames = 4096

// historyLen is how many releases Released keeps.
const historyLen = 32

func (p Policy) withDefaults() Policy {
	if p.MinBlames == 0 {
		p.MinBlames = DefaultMinBlames
	}
	if p.Window == 0 {
		p.Window = DefaultWindow
	}
	if p.Backoff == 0 {
		p.Backoff = DefaultBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = max(DefaultMaxBackoff, p.Backoff)
	}
	if p.Recheck == 0 {
		p.Recheck = DefaultRecheck
	}
	if p.MaxTracked == 0 {
		p.MaxTracked = DefaultMaxTracked
	}
	return p
}

// MaxMinBlames bounds Policy.MinBlames.
const MaxMinBlames = 1 << 20

// Validate names every bad field, each a *fielderr.Error keyed as in the
// configuration (scheduler.blockers.KEY), so the config reports them.
func (p Policy) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, fielderr.New(key, format, args...)) }
	if p.MinBlames < 1 || p.MinBlames > MaxMinBlames {
		bad("min_blames", "%d, want 1..%d", p.MinBlames, MaxMinBlames)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"window", p.Window}, {"backoff", p.Backoff}, {"max_backoff", p.MaxBackoff}, {"recheck", p.Recheck}} {
		if d.v <= 0 {
			bad(d.key, "%v, want a positive duration", d.v)
		}
	}
	if p.MaxBackoff < p.Backoff {
		bad("max_backoff", "%v is shorter than backoff %v", p.MaxBackoff, p.Backoff)
	}
	if p.Recheck > p.Backoff && p.Backoff > 0 {
		bad("recheck", "%v exceeds backoff %v: new processes of a confined command would be found late", p.Recheck, p.Backoff)
	}
	if p.MaxTracked < 1 {
		bad("max_tracked", "%d, want at least 1", p.MaxTracked)
	}
	return errors.Join(errs...)
}

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

// windowBlame is one in-kernel blame kept for ConfineWorst.
type windowBlame struct {
	at    time.Time
	cpu   int
	delay time.Duration
}

type tracked struct {
	Blocker
	recent []windowBlame // in-kernel blames within the kept window, oldest first
	// refusedUntil: the actuator refused it (outside the pool, real-time
	// threads); not tried again before then.
	refusedUntil time.Time
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

func (c *Confiner) onBlame(ev Event, now time.Time) error {
	b := c.blockers[ev.TGID]
	if b == nil {
		c.evict()
		b = &tracked{Blocker: Blocker{TGID: ev.TGID, First: now}}
		c.blockers[ev.TGID] = b
	}
	b.Comm = ev.Comm
	if ev.CgroupID != 0 {
		b.CgroupID = ev.CgroupID
	}
	b.Kernel = b.Kernel || ev.KernelThread()
	b.Count++
	b.Worst = max(b.Worst, ev.Delay)
	b.Total += ev.Delay
	b.Last = now
	if !ev.InKernel() {
		return nil
	}
	b.InKernel++
	if b.Kernel {
		return nil // reported, never moved
	}
	b.recent = append(b.recent, windowBlame{at: now, cpu: ev.CPU, delay: ev.Delay})
	b.prune(now, c.keep)
	return nil
}

// prune drops blames older than keep, and the oldest beyond the bound.
func (b *tracked) prune(now time.Time, keep time.Duration) {
	cut := 0
	for cut < len(b.recent) && now.Sub(b.recent[cut].at) > keep {
		cut++
	}
	cut = max(cut, len(b.recent)-maxWindowBlames)
	if cut > 0 {
		b.recent = slices.Delete(b.recent, 0, cut)
	}
}

// blamedOn sums b's in-kernel blames on cpu within window, with the
// longest of them.
func (b *tracked) blamedOn(now time.Time, cpu int, window time.Duration) (total, worst time.Duration, n int) {
	for _, r := range b.recent {
		if r.cpu == cpu && now.Sub(r.at) <= window {
			total += r.delay
			worst = max(worst, r.delay)
			n++
		}
	}
	return total, worst, n
}

// ConfineWorst is the SLO rule's move: it confines the process whose
// in-kernel paths delayed cpu's DP threads most within window, and its
// command's other processes, under a back-off. A candidate has at least
// MinBlames blames there, one of them minDelay or longer (a shorter delay
// cannot have put a packet above the mark the rule defends); kernel
// threads, confined and refused processes are none. budget (the core's
// share of the SLO) is kept as the reason. It reports whether a process
// was confined; a refused candidate is skipped for the next one.
func (c *Confiner) ConfineWorst(cpu int, window, minDelay time.Duration, budget float64) (Reason, bool, error) {
	c.mu.Lock()
	defer c.unlock()
	now := c.clock.Now()
	c.keep = max(c.keep, window)
	if !c.active {
		return Reason{}, false, nil
	}
	var errs []error
	for {
		var worst *tracked
		var why Reason
		for _, b := range c.blockers {
			if b.Kernel || !b.ConfinedUntil.IsZero() || now.Before(b.refusedUntil) {
				continue
			}
			total, longest, n := b.blamedOn(now, cpu, window)
			if n < c.policy.MinBlames || total <= 0 || longest < minDelay {
				continue
			}
			if worst == nil || total > why.Blamed || (total == why.Blamed && b.TGID < worst.TGID) {
				worst = b
				why = Reason{At: now, CPU: cpu, TGID: b.TGID, Comm: b.Comm, Blamed: total, Blames: n, Window: window, Budget: budget}
			}
		}
		if worst == nil {
			return Reason{}, false, errors.Join(errs...)
		}
		// Move it first: a process the pool refuses must not start a
		// back-off for its command (nothing of it could be confined).
		ok, err := c.act.Confine(worst.TGID)
		if err != nil {
			worst.Error = err.Error()
			worst.refusedUntil = now.Add(c.policy.MaxBackoff)
			errs = append(errs, fmt.Errorf("blocker: confine pid %d (%s): %w", worst.TGID, worst.Comm, err))
			continue
		}
		worst.recent = nil
		cmd := c.learn(worst.Comm, worst.CgroupID, now)
		cmd.Why = why
		if ok {
			c.own(worst.TGID, cmd)
		} else {
			delete(c.blockers, worst.TGID) // it vanished; its command is still learned
		}
		errs = append(errs, c.confineSiblings(cmd))
		return why, true, errors.Join(errs...)
	}
}

// ReleaseOne releases the confined command whose back-off ended first, if
// any has: the SLO rule's move once the packets' budget is quiet.
func (c *Confiner) ReleaseOne() (Release, bool, error) {
	c.mu.Lock()
	defer c.unlock()
	now := c.clock.Now()
	var due *Command
	for _, cmd := range c.commands {
		if cmd.Until.IsZero() || now.Before(cmd.Until) {
			continue
		}
		if due == nil || cmd.Until.Before(due.Until) || (cmd.Until.Equal(due.Until) && cmd.Comm < due.Comm) {
			due = cmd
		}
	}
	if due == nil {
		return Release{}, false, nil
	}
	rel := Release{Comm: due.Comm, At: now, Confined: now.Sub(due.Until.Add(-due.Backoff)), Why: due.Why}
	err := c.releaseCommand(due.Comm)
	due.Released = now
	c.released = append(c.released, rel)
	if len(c.released) > historyLen {
		c.released = slices.Delete(c.released, 0, len(c.released)-historyLen)
	}
	return rel, true, err
}

// Released returns the last releases, oldest first.
func (c *Confiner) Released() []Release {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.released)
}

// learn starts (or extends) a back-off for comm: doubling on repeat.
func (c *Confiner) learn(comm string, cgroup uint64, now time.Time) *Command {
	cmd := c.commands[comm]
	if cmd == nil {
		cmd = &Command{Comm: comm}
		c.commands[comm] = cmd
	}
	if cgroup != 0 && !slices.Contains(cmd.CgroupIDs, cgroup) {
		cmd.CgroupIDs = append(cmd.CgroupIDs, cgroup)
	}
	if !cmd.Until.IsZero() {
		return cmd // already under back-off: this process joins it
	}
	if !cmd.Released.IsZero() && now.Sub(cmd.Released) > c.policy.MaxBackoff {
		cmd.Strikes = 0 // clear long enough: start over
	}
	cmd.Backoff = c.policy.Backoff
	for i := 0; i < cmd.Strikes && cmd.Backoff < c.policy.MaxBackoff; i++ {
		cmd.Backoff *= 2
	}
	cmd.Backoff = min(cmd.Backoff, c.policy.MaxBackoff)
	cmd.Strikes++
	cmd.Until = now.Add(cmd.Backoff)
	return cmd
}

// confine moves tgid under cmd's back-off. A vanished process is dropped.
func (c *Confiner) confine(tgid int, cmd *Command) error {
	if _, ok := c.owner[tgid]; ok || cmd.refused[tgid] {
		return nil
	}
	ok, err := c.act.Confine(tgid)
	if err != nil {
		if b := c.blockers[tgid]; b != nil {
			b.Error = err.Error()
		}
		if cmd.refused == nil {
			cmd.refused = map[int]bool{}
		}
		cmd.refused[tgid] = true
		return fmt.Errorf("blocker: confine pid %d (%s): %w", tgid, cmd.Comm, err)
	}
	if !ok {
		delete(c.blockers, tgid) // vanished
		return nil
	}
	c.own(tgid, cmd)
	return nil
}

// own records tgid as confined under cmd's back-off.
func (c *Confiner) own(tgid int, cmd *Command) {
	c.groupMayHold = true
	c.owner[tgid] = cmd.Comm
	cmd.PIDs = append(cmd.PIDs, tgid)
	c.changes = append(c.changes, Change{TGID: tgid, Comm: cmd.Comm, Confined: true, Until: cmd.Until})
	if b := c.blockers[tgid]; b != nil {
		b.ConfinedUntil = cmd.Until
		b.Error = ""
	}
}

// confineSiblings confines the live processes that run cmd's command.
func (c *Confiner) confineSiblings(cmd *Command) error {
	if c.procs == nil {
		return nil
	}
	pids, err := c.procs.ByCommand(cmd.Comm)
	if err != nil {
		return fmt.Errorf("blocker: find processes running %q: %w", cmd.Comm, err)
	}
	var errs []error
	for _, pid := range pids {
		if b := c.blockers[pid]; b != nil && b.Kernel {
			continue
		}
		errs = append(errs, c.confine(pid, cmd))
	}
	return errors.Join(errs...)
}

func (c *Confiner) onExec(ev Event, now time.Time) error {
	cmd := c.commands[ev.Comm]
	if !c.active || cmd == nil || cmd.Until.IsZero() {
		return nil
	}
	if ev.CgroupID != 0 && len(cmd.CgroupIDs) > 0 && !slices.Contains(cmd.CgroupIDs, ev.CgroupID) {
		return nil // same name, another kind of process
	}
	return c.confine(ev.TGID, cmd)
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

// adoptChildren accounts for confined processes the Confiner did not move
// itself: children forked by confined processes start confined. Each joins
// the back-off that ends last (its parent's, or a longer one), so it is
// released with it; with no back-off running it is released now.
func (c *Confiner) adoptChildren() error {
	pids, err := c.act.Confined()
	if err != nil {
		return fmt.Errorf("blocker: list confined processes: %w", err)
	}
	var latest *Command
	for _, cmd := range c.commands {
		if !cmd.Until.IsZero() && (latest == nil || cmd.Until.After(latest.Until)) {
			latest = cmd
		}
	}
	c.groupMayHold = len(pids) > 0
	var errs []error
	for _, pid := range pids {
		if _, ok := c.owner[pid]; ok {
			continue
		}
		if latest == nil || !c.active {
			if err := c.act.Release(pid); err != nil {
				errs = append(errs, fmt.Errorf("blocker: release pid %d: %w", pid, err))
			}
			continue
		}
		c.owner[pid] = latest.Comm
		latest.PIDs = append(latest.PIDs, pid)
	}
	return errors.Join(errs...)
}

// releaseCommand releases every process confined under comm and ends its
// back-off (keeping the strikes).
func (c *Confiner) releaseCommand(comm string) error {
	cmd := c.commands[comm]
	var errs []error
	for _, pid := range cmd.PIDs {
		if err := c.act.Release(pid); err != nil {
			errs = append(errs, fmt.Errorf("blocker: release pid %d (%s): %w", pid, comm, err))
			if b := c.blockers[pid]; b != nil {
				b.Error = err.Error()
			}
		}
		delete(c.owner, pid)
		c.changes = append(c.changes, Change{TGID: pid, Comm: comm})
		if b := c.blockers[pid]; b != nil {
			b.ConfinedUntil = time.Time{}
		}
	}
	cmd.PIDs = nil
	cmd.refused = nil
	cmd.Until = time.Time{}
	return errors.Join(errs...)
}

func (c *Confiner) sortedCommands() []string {
	names := make([]string, 0, len(c.commands))
	for n := range c.commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// evict drops the least recently blamed unconfined process when the table
// is full.
func (c *Confiner) evict() {
	if len(c.blockers) < c.policy.MaxTracked {
		return
	}
	victim := 0
	var oldest time.Time
	for tgid, b := range c.blockers {
		if !b.ConfinedUntil.IsZero() {
			continue
		}
		if victim == 0 || b.Last.Before(oldest) {
			victim, oldest = tgid, b.Last
		}
	}
	if victim != 0 {
		delete(c.blockers, victim)
	}
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
