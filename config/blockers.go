package config

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

func (c *checker) blockers(b Blockers) {
	const p = "scheduler.blockers."
	for _, d := range []struct {
		key string
		v   Duration
	}{{"threshold", b.Threshold}, {"window", b.Window}, {"backoff", b.Backoff}, {"max_backoff", b.MaxBackoff}, {"recheck", b.Recheck}} {
		c.positive(p+d.key, d.v)
	}
	c.intRange(p+"min_blames", b.MinBlames, 1, 1<<20)
	if b.MaxBackoff < b.Backoff {
		c.fail(p+"max_backoff", "must not be below scheduler.blockers.backoff (%s < %s)", b.MaxBackoff, b.Backoff)
	}
	if b.Recheck > b.Backoff && b.Backoff > 0 {
		c.fail(p+"recheck", "must not exceed scheduler.blockers.backoff (%s > %s): new processes of a confined command would be found late", b.Recheck, b.Backoff)
	}
}
