package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/scheduler"
)

const checkpointVersion = 1

// Checkpoint is the daemon's run-time state that a restart must not lose:
// a policy set through the control socket and which cores were lent. It is
// written on every change (atomically and durably: writeFileAtomic) and
// checked with a checksum, like kubelet's cpu_manager_state; on start it is reconciled
// against the config, never a reason to refuse to start.
type Checkpoint struct {
	Version  int                  `json:"version"`
	PID      int                  `json:"pid"`
	Policy   scheduler.PolicyName `json:"policy"`        // policy in force
	Override bool                 `json:"override"`      // Policy was set at run time, not from config
	Config   scheduler.PolicyName `json:"config_policy"` // the config's policy when saved
	Lent     []int                `json:"lent"`
	Saved    time.Time            `json:"saved"`
	Checksum string               `json:"checksum"`
}

func (c Checkpoint) sum() string {
	c.Checksum = ""
	b, _ := json.Marshal(c)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func checkpointPath(stateDir string) string { return filepath.Join(stateDir, "state.json") }

// checkpointMu serializes checkpoint writes: the scheduler, the control
// socket and Close all save, and each save must land whole and in order.
var checkpointMu sync.Mutex

func saveCheckpoint(stateDir string, c Checkpoint) error {
	c.Version = checkpointVersion
	c.Lent = slices.Clone(c.Lent)
	c.Checksum = c.sum()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	checkpointMu.Lock()
	defer checkpointMu.Unlock()
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	if err := writeFileAtomic(checkpointPath(stateDir), b, 0o600); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data the way kubelet's filestore does:
// a temp file of its own in the same directory, fsync, rename over path,
// then fsync the directory so the rename itself survives a power cut. A
// reader sees the old file or the new one, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err == nil {
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// loadCheckpoint returns the saved state; a missing file is (nil, nil), a
// corrupt one an error (the caller logs it and starts fresh).
func loadCheckpoint(stateDir string) (*Checkpoint, error) {
	b, err := os.ReadFile(checkpointPath(stateDir))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", checkpointPath(stateDir), err)
	}
	if c.Version != checkpointVersion {
		return nil, fmt.Errorf("checkpoint %s: version %d, want %d", checkpointPath(stateDir), c.Version, checkpointVersion)
	}
	if c.Checksum != c.sum() {
		return nil, fmt.Errorf("checkpoint %s: checksum mismatch", checkpointPath(stateDir))
	}
	return &c, nil
}

// checkpointSoon has checkpointLoop save the state. A lend or reclaim runs
// on the scheduler's path, and the save's fsyncs took up to a second behind
// a CP load that works the file system (eval ping's dentry storm), holding
// every scheduling decision that long. What it records of the cores is for
// the log only: a restart reclaims every DP core from the pool itself.
func (d *Daemon) checkpointSoon() {
	select {
	case d.ckDue <- struct{}{}:
	default: // one is pending: it will save the state as it is then
	}
}

// checkpointLoop saves the state each time checkpointSoon asks, until ctx
// ends (Close saves the last state itself).
func (d *Daemon) checkpointLoop(ctx context.Context) {
	defer d.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.ckDue:
			d.checkpoint()
		}
	}
}

// checkpoint saves the current state. ckMu makes the snapshot and its write
// one step, so a slower save of older state never lands after a newer one.
func (d *Daemon) checkpoint() {
	d.ckMu.Lock()
	defer d.ckMu.Unlock()
	policy := d.Policy() // not under d.mu: the scheduler's lock comes first
	d.mu.Lock()
	cp := Checkpoint{PID: os.Getpid(), Policy: policy, Override: d.override, Config: d.cfg.Policy, Saved: time.Now()}
	d.mu.Unlock()
	if d.pool != nil {
		for _, cpu := range d.pool.CPUs() {
			if slices.Contains(d.cfg.DPCPUs, cpu) {
				cp.Lent = append(cp.Lent, cpu)
			}
		}
	}
	if err := saveCheckpoint(d.cfg.StateDir, cp); err != nil {
		d.log.Warn("checkpoint not saved", "err", err)
	}
}
