package ovs

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// DB is an Open vSwitch database reached through its unix socket
// (ovs-vsctl --db=unix:PATH): a running OVS this process did not start,
// such as the host's own.
type DB struct {
	Socket string
	env    []string // the tool's environment; nil inherits this process's
}

// vsctl runs ovs-vsctl against the database, bounded by ctx (its deadline
// becomes ovs-vsctl's --timeout, default 30 s).
func (db DB) vsctl(ctx context.Context, args ...string) (string, error) {
	timeout := 30
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(1, int(time.Until(dl).Seconds()+0.999))
	}
	full := append([]string{"--db=unix:" + db.Socket, fmt.Sprintf("--timeout=%d", timeout)}, args...)
	cmd := exec.CommandContext(ctx, "ovs-vsctl", full...)
	cmd.Env = db.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ovs-vsctl %s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// SetMaxSleep sets other_config:pmd-maxsleep (whole µs, 0 busy-polls) and
// returns once ovs-vswitchd has applied it.
func (db DB) SetMaxSleep(ctx context.Context, d time.Duration) error {
	if err := checkMaxSleep(d); err != nil {
		return err
	}
	_, err := db.vsctl(ctx, "set", "Open_vSwitch", ".", "other_config:pmd-maxsleep="+maxSleepMicros(d))
	return err
}

// MaxSleep reads other_config:pmd-maxsleep; set is false when the key is
// absent (OVS busy-polls then).
func (db DB) MaxSleep(ctx context.Context) (d time.Duration, set bool, err error) {
	out, err := db.vsctl(ctx, "--if-exists", "get", "Open_vSwitch", ".", "other_config:pmd-maxsleep")
	if err != nil {
		return 0, false, err
	}
	v := strings.Trim(strings.TrimSpace(out), `"`)
	if v == "" {
		return 0, false, nil
	}
	us, err := strconv.ParseInt(v, 10, 64)
	if err != nil || us < 0 {
		return 0, false, fmt.Errorf("ovs: other_config:pmd-maxsleep is %q, not whole µs", v)
	}
	return time.Duration(us) * time.Microsecond, true, nil
}

// RestoreMaxSleep puts back what MaxSleep read: the value, or no key.
func (db DB) RestoreMaxSleep(ctx context.Context, d time.Duration, set bool) error {
	if set {
		return db.SetMaxSleep(ctx, d)
	}
	_, err := db.vsctl(ctx, "remove", "Open_vSwitch", ".", "other_config", "pmd-maxsleep")
	return err
}
