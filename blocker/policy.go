package blocker

import (
	"errors"
	"time"

	"github.com/taichi-sched/taichi/internal/fielderr"
)

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
