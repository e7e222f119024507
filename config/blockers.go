package config

import "github.com/taichi-sched/taichi/blocker"

// Blockers configures blocker-aware lending (scheduler.blockers): who
// delays DP threads, and keeping those processes on the CP cores.
type Blockers struct {
	Enabled    bool     `key:"enabled"`
	Threshold  Duration `key:"threshold"`
	MinBlames  int      `key:"min_blames"`
	Window     Duration `key:"window"`
	Backoff    Duration `key:"backoff"`
	MaxBackoff Duration `key:"max_backoff"`
	Recheck    Duration `key:"recheck"`
	// ConfineAtExec also confines new processes of a confined command as
	// they exec (the tracer reports them). Off by default: each is a cgroup
	// migration, which stalls the host's forks for an RCU grace period; at
	// 32 VMs it made taichi's VM startup 12.7-17.8 s against 9.5-10.6 s
	// without it (static 14.2-14.9 s).
	ConfineAtExec bool `key:"confine_at_exec"`
}

// Policy is the confinement policy these keys set.
func (b Blockers) Policy() blocker.Policy {
	return blocker.Policy{MinBlames: b.MinBlames, Window: b.Window.D(), Backoff: b.Backoff.D(),
		MaxBackoff: b.MaxBackoff.D(), Recheck: b.Recheck.D(), MaxTracked: blocker.DefaultMaxTracked}
}

// blockers checks the tracer's threshold here and the policy with the
// blocker package's own validation.
func (c *checker) blockers(b Blockers) {
	c.positive("scheduler.blockers.threshold", b.Threshold)
	c.packageErrors("scheduler.blockers.", b.Policy().Validate(), nil)
}
