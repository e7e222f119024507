package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taichi-sched/taichi/blocker"
	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/kmod"
	"github.com/taichi-sched/taichi/scheduler"
)

// Blocker-aware lending states shown in status.
const (
	BlockersOff         = "off"         // scheduler.blockers.enabled: false
	BlockersUnavailable = "unavailable" // the tracer cannot run here (see error)
	BlockersWatching    = "watching"    // blame is recorded; nothing is moved (policy is not taichi)
	BlockersConfining   = "confining"   // blockers are confined (policy taichi)
)

// blockerWatch runs blocker-aware lending: the tracer names who delays the
// DP threads, the Confiner decides, the CP pool moves. Only the taichi
// policy confines; static and dynamic keep every CP task in the pool.
type blockerWatch struct {
	d      *Daemon
	cfg    config.Blockers
	tracer *blocker.Tracer
	conf   *blocker.Confiner
	err    string // why the tracer is unavailable

	mu         sync.Mutex
	tids       []int
	watched    []string
	kmodSeq    map[int]uint64        // last kernel-module record seen per CPU
	coreStats  map[int]blocker.Stats // tracer counters per DPDK core, last sample
	kmodBlames uint64
	lastErr    string

	// confines carries the SLO rule's confinements to confineLoop, which
	// moves the processes off the scheduler's path; confining: one is
	// queued or in progress. Nil (tests): ConfineWorst moves them itself.
	confines  chan confineRequest
	confining atomic.Bool
}

// confineRequest is one ConfineWorst call of the scheduler.
type confineRequest struct {
	cpu                        int
	window, minDelay, minTotal time.Duration
	budget                     float64
}

// startBlockers starts the tracer and the Confiner loop. A kernel where the
// tracer cannot run leaves lending as it is and says why in status.
func (d *Daemon) startBlockers(runCtx context.Context) {
	cfg := d.cfg.Scheduler.Blockers
	if !cfg.Enabled {
		return
	}
	w := &blockerWatch{d: d, cfg: cfg, kmodSeq: map[int]uint64{}, coreStats: map[int]blocker.Stats{}}
	d.blockers = w
	conf, err := blocker.NewConfiner(cfg.Policy(), scheduler.RealClock{}, d.pool, blocker.MembersByCommand(d.pool.Members))
	if err != nil {
		w.err = err.Error()
		d.log.Warn("blocker-aware lending off", "err", err)
		return
	}
	w.conf = conf
	conf.OnChange(w.changed)
	tr, err := blocker.Open(blocker.Options{Threshold: cfg.Threshold.D()})
	if err != nil {
		w.err = err.Error()
		d.log.Warn("blocker tracer unavailable; lending without confinement", "err", err)
	} else {
		w.tracer = tr
		d.log.Info("blocker tracer attached", "load", tr.LoadTime().Round(time.Microsecond), "threshold", cfg.Threshold)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			w.readLoop()
		}()
	}
	w.sync()
	w.confines = make(chan confineRequest, 1)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		w.confineLoop(runCtx)
	}()
	go func() {
		defer d.wg.Done()
		w.tickLoop(runCtx)
	}()
}

// readLoop feeds tracer events to the Confiner until the tracer closes.
func (w *blockerWatch) readLoop() {
	for {
		ev, err := w.tracer.Read()
		if errors.Is(err, blocker.ErrClosed) {
			return
		}
		if err != nil {
			w.note("blocker tracer record", err)
			continue
		}
		w.note("blocker confinement", w.conf.Observe(ev))
		w.afterChange()
	}
}

// tickLoop runs the periodic work and closes the tracer at shutdown.
func (w *blockerWatch) tickLoop(ctx context.Context) {
	t := time.NewTicker(w.conf.Policy().Recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if w.tracer != nil {
				_ = w.tracer.Close()
			}
			// The pool releases confined processes when it closes.
			return
		case <-t.C:
			w.sync()
			w.note("blocker confinement", w.conf.Tick())
			w.afterChange()
		}
	}
}

// sync follows the daemon: the policy decides whether blockers are
// confined, the DP threads to watch come from the loops and DPDK lcores,
// and the kernel module's blocker records feed the same Confiner.
func (w *blockerWatch) sync() {
	d := w.d
	active := d.confining()
	if w.conf.Active() != active {
		w.note("blocker confinement", w.conf.SetActive(active))
		d.log.Info("blocker confinement", "active", active, "policy", d.Policy())
	}
	if w.tracer != nil {
		tids := w.dpThreads()
		w.mu.Lock()
		changed := !slices.Equal(tids, w.tids)
		w.mu.Unlock()
		if changed {
			if err := w.tracer.SetDPThreads(tids); err != nil {
				w.note("blocker tracer", err)
			} else {
				w.mu.Lock()
				w.tids = tids
				w.mu.Unlock()
			}
		}
	}
	if d.kmod != nil {
		recs, err := d.kmod.Blockers(kmod.AllCPUs, false)
		if err != nil {
			w.note("kernel module blockers", err)
		}
		for _, ev := range w.newKmodEvents(recs) {
			w.note("blocker confinement", w.conf.Observe(ev))
		}
	}
}

// restart starts confinement afresh, as the scheduler starts the SLO
// rule's horizon afresh on a policy switch or a new SLO: every confined
// process is released and every command forgotten, at once (the periodic
// sync would miss a switch that is undone within its period, as an eval
// sweeping the SLO does).
func (w *blockerWatch) restart(active bool) {
	if w == nil || w.conf == nil {
		return
	}
	w.note("blocker confinement", w.conf.Forget())
	w.note("blocker confinement", w.conf.SetActive(active))
	w.afterChange()
}

// dpThreads lists the DP thread ids: taichi's loops and DPDK lcores.
func (w *blockerWatch) dpThreads() []int {
	var tids []int
	for _, l := range w.d.loops {
		if tid := l.client.TID(); tid > 0 {
			tids = append(tids, tid)
		}
	}
	for _, m := range w.d.dpdk {
		tids = append(tids, m.LcoreTIDs()...)
	}
	slices.Sort(tids)
	return slices.Compact(tids)
}

// newKmodEvents turns the kernel module's records not seen before into
// blame: each is a CP kernel path that was non-preemptible when a kick for
// a DP core arrived. Records whose measured wait is below the threshold
// are skipped.
func (w *blockerWatch) newKmodEvents(recs []kmod.Blocker) []blocker.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []blocker.Event
	for _, r := range recs {
		if r.Seq <= w.kmodSeq[r.CPU] {
			continue
		}
		w.kmodSeq[r.CPU] = r.Seq
		if r.Tgid <= 0 || (r.Waited && time.Duration(r.WaitNs) < w.cfg.Threshold.D()) {
			continue
		}
		w.kmodBlames++
		ev := blocker.Event{Kind: blocker.KindBlame, CPU: r.CPU, StampNs: r.TimeNs, PID: r.Pid, TGID: r.Tgid,
			Flags: blocker.FlagInKernel, Comm: r.Comm}
		if r.Waited {
			ev.Delay = time.Duration(r.WaitNs)
		}
		out = append(out, ev)
	}
	return out
}

// changed is told of each confinement and release.
func (w *blockerWatch) changed(ch blocker.Change) {
	if ch.Confined {
		w.d.log.Debug("blocker confined to CP cores", "pid", ch.TGID, "comm", ch.Comm, "until", ch.Until.Format(time.RFC3339Nano))
	} else {
		w.d.log.Debug("blocker released", "pid", ch.TGID, "comm", ch.Comm)
	}
}

// ConfineWorst implements scheduler.BlockerControl: the SLO rule found
// cpu's residence window above the high-water mark. It answers at once
// whether there is a task to confine and has confineLoop move it: moving
// a process between cgroups took up to a second behind a fork-heavy CP
// load, and the scheduler decides nothing while it waits. A confinement
// still under way answers for the window too.
func (d *Daemon) ConfineWorst(cpu int, window, minDelay, minTotal time.Duration, budget float64) bool {
	w := d.blockers
	if w == nil || w.conf == nil {
		return false
	}
	req := confineRequest{cpu: cpu, window: window, minDelay: minDelay, minTotal: minTotal, budget: budget}
	if w.confines == nil {
		return w.confine(req)
	}
	if w.confining.Load() {
		return true
	}
	if _, ok := w.conf.Worst(cpu, window, minDelay, minTotal); !ok {
		return false
	}
	w.confining.Store(true)
	w.confines <- req // never blocks: one request at a time (confining)
	return true
}

// confineLoop carries out the SLO rule's confinements until ctx ends.
func (w *blockerWatch) confineLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-w.confines:
			w.confine(req)
			w.confining.Store(false)
		}
	}
}

// confine confines the worst blocker for req now.
func (w *blockerWatch) confine(req confineRequest) bool {
	why, ok, err := w.conf.ConfineWorst(req.cpu, req.window, req.minDelay, req.minTotal, req.budget)
	w.note("blocker confinement", err)
	if ok {
		w.d.log.Info("slo rule: confining the worst blocker", "cpu", req.cpu, "comm", why.Comm, "pid", why.TGID,
			"blamed", why.Blamed, "blames", why.Blames, "window", req.window, "budget", req.budget)
		w.afterChange()
	}
	return ok
}

// ReleaseOne implements scheduler.BlockerControl: the DP cores' residence
// stayed quiet.
func (d *Daemon) ReleaseOne() bool {
	w := d.blockers
	if w == nil || w.conf == nil {
		return false
	}
	rel, ok, err := w.conf.ReleaseOne()
	w.note("blocker release", err)
	if ok {
		d.log.Info("slo rule: releasing a confined command", "comm", rel.Comm, "confined_for", rel.Confined.Round(time.Millisecond))
		w.afterChange()
	}
	return ok
}

// afterChange tells the tracer which commands to report at exec, and logs
// when the set of commands under back-off changes (one line per change,
// however many processes run them).
func (w *blockerWatch) afterChange() {
	watched := w.conf.WatchedCommands()
	w.mu.Lock()
	changed := !slices.Equal(watched, w.watched)
	w.mu.Unlock()
	if !changed {
		return
	}
	w.d.log.Info("blocking commands confined to CP cores", "commands", watched, "processes", w.conf.ConfinedCount())
	if w.tracer != nil && w.cfg.ConfineAtExec {
		if err := w.tracer.SetCommands(watched); err != nil {
			w.note("blocker tracer", err)
			return // retried at the next change check
		}
	}
	w.mu.Lock()
	w.watched = watched
	w.mu.Unlock()
}

// note logs an error once until a different one comes (refusals of
// processes outside the pool repeat otherwise).
func (w *blockerWatch) note(what string, err error) {
	if err == nil {
		return
	}
	msg := what + ": " + err.Error()
	w.mu.Lock()
	repeat := msg == w.lastErr
	w.lastErr = msg
	w.mu.Unlock()
	if !repeat {
		w.d.log.Debug(what, "err", err)
	}
}

// BlockersStatus is blocker-aware lending in `taichi status` and
// `taichi blockers`.
type BlockersStatus struct {
	State     string `json:"state"` // off, unavailable, watching, confining
	Error     string `json:"error,omitempty"`
	Threshold string `json:"threshold,omitempty"`
	DPThreads []int  `json:"dp_threads,omitempty"`
	Wakes     uint64 `json:"wakes"`
	Runs      uint64 `json:"runs"`
	Blames    uint64 `json:"blames"` // tracer blame records (delay >= threshold)
	Lost      uint64 `json:"lost"`   // records a full ring buffer dropped
	Execs     uint64 `json:"execs"`  // starts of confined commands seen
	KmodBlame uint64 `json:"kmod_blames,omitempty"`
	// Rule says how confinement is decided.
	Rule string `json:"rule,omitempty"`
	// WakeRunP50us and WakeRunP99us: DP wake->run delay quantiles, as the
	// upper bound of their log2 bucket (over-estimates by up to 2x).
	WakeRunP50us float64         `json:"wake_run_p50_us"`
	WakeRunP99us float64         `json:"wake_run_p99_us"`
	Confined     int             `json:"confined"`
	Tasks        []BlockerStatus `json:"tasks,omitempty"`
	Commands     []CommandStatus `json:"commands,omitempty"`
	// Released are the last commands the SLO rule released, oldest first.
	Released []ReleaseStatus `json:"released,omitempty"`
}

// ruleText is BlockersStatus.Rule.
var ruleText = fmt.Sprintf("while a DP core's residence p99 over the budget horizon and over the last window are both above %g of the SLO, "+
	"the CP process with the most in-kernel delay of that core's DP threads in the window is confined (one per window); "+
	"a confined command is released, one at a time and after its back-off, once every lending core's horizon p99 stayed "+
	"at or below %g of the SLO for the quiet period", scheduler.HighWater, scheduler.LowWater)

// WhyStatus is what a confinement answered.
type WhyStatus struct {
	At       time.Time `json:"at"`
	CPU      int       `json:"cpu"`
	PID      int       `json:"pid"`
	BlamedUs float64   `json:"blamed_us"` // in-kernel delay of the core's DP threads within the window
	Blames   int       `json:"blames"`
	Window   string    `json:"window"`
	Budget   float64   `json:"budget"` // the window's residence p99 / SLO (upper bound)
}

// ReleaseStatus is a command the SLO rule released.
type ReleaseStatus struct {
	Comm       string    `json:"comm"`
	At         time.Time `json:"at"`
	ConfinedMs float64   `json:"confined_ms"`
	Why        WhyStatus `json:"why"`
}

func whyStatus(r blocker.Reason) WhyStatus {
	return WhyStatus{At: r.At, CPU: r.CPU, PID: r.TGID, BlamedUs: float64(r.Blamed) / float64(time.Microsecond),
		Blames: r.Blames, Window: r.Window.String(), Budget: r.Budget}
}

// BlockerStatus is one process blamed for delaying DP (or confined with one).
type BlockerStatus struct {
	PID           int        `json:"pid"`
	Comm          string     `json:"comm"`
	Kernel        bool       `json:"kernel_thread,omitempty"`
	Count         int        `json:"count"`
	InKernel      int        `json:"in_kernel"`
	WorstUs       float64    `json:"worst_us"`
	TotalMs       float64    `json:"total_ms"`
	LastSeen      time.Time  `json:"last_seen,omitzero"`
	ConfinedUntil *time.Time `json:"confined_until,omitempty"`
	Error         string     `json:"error,omitempty"`
}

// CommandStatus is a learned blocking command.
type CommandStatus struct {
	Comm    string     `json:"comm"`
	Backoff string     `json:"backoff"`
	Until   *time.Time `json:"until,omitempty"`
	Strikes int        `json:"strikes"`
	PIDs    []int      `json:"pids,omitempty"`
	// Why: the confinement's cause (zero for one confined before).
	Why *WhyStatus `json:"why,omitempty"`
	// Due: past its back-off, waiting for a quiet window to be released.
	Due bool `json:"due,omitempty"`
}

func (d *Daemon) blockersStatus() *BlockersStatus {
	w := d.blockers
	if w == nil {
		return &BlockersStatus{State: BlockersOff}
	}
	st := &BlockersStatus{State: BlockersUnavailable, Error: w.err, Threshold: w.cfg.Threshold.String(), Rule: ruleText}
	if w.conf == nil {
		return st
	}
	if w.tracer != nil || d.kmod != nil {
		st.State = BlockersWatching
		if w.conf.Active() {
			st.State = BlockersConfining
		}
	}
	w.mu.Lock()
	st.DPThreads = slices.Clone(w.tids)
	st.KmodBlame = w.kmodBlames
	w.mu.Unlock()
	if w.tracer != nil {
		if ts, err := w.tracer.Stats(); err == nil {
			st.Wakes, st.Runs, st.Blames, st.Lost, st.Execs = ts.Wakes, ts.Runs, ts.Reported, ts.Lost, ts.Execs
			st.WakeRunP50us = float64(ts.Quantile(0.5)) / float64(time.Microsecond)
			st.WakeRunP99us = float64(ts.Quantile(0.99)) / float64(time.Microsecond)
		}
	}
	for _, b := range w.conf.Blockers() {
		bs := BlockerStatus{PID: b.TGID, Comm: b.Comm, Kernel: b.Kernel, Count: b.Count, InKernel: b.InKernel,
			WorstUs: float64(b.Worst) / float64(time.Microsecond), TotalMs: float64(b.Total) / float64(time.Millisecond),
			LastSeen: b.Last, Error: b.Error}
		if !b.ConfinedUntil.IsZero() {
			until := b.ConfinedUntil
			bs.ConfinedUntil = &until
			st.Confined++
		}
		st.Tasks = append(st.Tasks, bs)
	}
	for _, c := range w.conf.Commands() {
		cs := CommandStatus{Comm: c.Comm, Backoff: c.Backoff.String(), Strikes: c.Strikes, PIDs: c.PIDs}
		if !c.Until.IsZero() {
			until := c.Until
			cs.Until = &until
			cs.Due = !time.Now().Before(until)
		}
		if !c.Why.At.IsZero() {
			why := whyStatus(c.Why)
			cs.Why = &why
		}
		st.Commands = append(st.Commands, cs)
	}
	for _, r := range w.conf.Released() {
		st.Released = append(st.Released, ReleaseStatus{Comm: r.Comm, At: r.At,
			ConfinedMs: float64(r.Confined) / float64(time.Millisecond), Why: whyStatus(r.Why)})
	}
	return st
}

// blockerCollector exports blocker-aware lending as taichi_blocker_*.
type blockerCollector struct {
	d                       *Daemon
	blames, confined, delay *prometheus.Desc
}

func newBlockerCollector(d *Daemon) *blockerCollector {
	return &blockerCollector{
		d:        d,
		blames:   prometheus.NewDesc("taichi_blocker_blames_total", "Times a task was blamed for delaying a DP thread's wake->run beyond the threshold.", []string{"source"}, nil),
		confined: prometheus.NewDesc("taichi_blocker_confined_tasks", "Processes confined to the CP cores as blockers.", nil, nil),
		delay:    prometheus.NewDesc("taichi_blocker_wake_run_seconds", "DP threads' wake->run delay (log2 buckets).", nil, nil),
	}
}

func (c *blockerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.blames
	ch <- c.confined
	ch <- c.delay
}

func (c *blockerCollector) Collect(ch chan<- prometheus.Metric) {
	w := c.d.blockers
	if w == nil || w.conf == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.confined, prometheus.GaugeValue, float64(w.conf.ConfinedCount()))
	w.mu.Lock()
	kb := w.kmodBlames
	w.mu.Unlock()
	if c.d.kmod != nil {
		ch <- prometheus.MustNewConstMetric(c.blames, prometheus.CounterValue, float64(kb), "kmod")
	}
	if w.tracer == nil {
		return
	}
	ts, err := w.tracer.Stats()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.blames, prometheus.CounterValue, float64(ts.Reported), "tracer")
	buckets := map[float64]uint64{}
	var cum uint64
	for b, n := range ts.Hist {
		cum += n
		if b < 40 { // up to ~1100 s; beyond is the +Inf bucket
			buckets[blocker.BucketUpper(b).Seconds()] = cum
		}
	}
	ch <- prometheus.MustNewConstHistogram(c.delay, ts.Runs, ts.DelaySum.Seconds(), buckets)
}

// Blockers answers the control socket's "blockers" request.
func (d *Daemon) Blockers() *BlockersStatus { return d.blockersStatus() }
