package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestCheckpointRoundTripAndChecks(t *testing.T) {
	dir := t.TempDir()
	if cp, err := loadCheckpoint(dir); cp != nil || err != nil {
		t.Fatalf("missing checkpoint = %v, %v; want nil, nil", cp, err)
	}
	want := Checkpoint{PID: 42, Policy: "static", Override: true, Config: "taichi", Lent: []int{3, 1}}
	if err := saveCheckpoint(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := loadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != 42 || got.Policy != "static" || !got.Override || got.Config != "taichi" || len(got.Lent) != 2 {
		t.Fatalf("round trip = %+v", got)
	}
	if info, _ := os.Stat(checkpointPath(dir)); info.Mode().Perm() != 0o600 {
		t.Errorf("checkpoint mode %v, want 0600", info.Mode().Perm())
	}

	// A hand-edited file fails its checksum; the daemon then starts fresh.
	b, _ := os.ReadFile(checkpointPath(dir))
	os.WriteFile(checkpointPath(dir), []byte(strings.Replace(string(b), `"static"`, `"dynamic"`, 1)), 0o600)
	if _, err := loadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("tampered checkpoint: err = %v, want checksum mismatch", err)
	}
	os.WriteFile(checkpointPath(dir), []byte("{not json"), 0o600)
	if _, err := loadCheckpoint(dir); err == nil {
		t.Error("garbled checkpoint accepted")
	}
	os.WriteFile(checkpointPath(dir), []byte(`{"version": 99}`), 0o600)
	if _, err := loadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("future version: err = %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*tmp*")); len(m) > 0 {
		t.Error("temp file left behind")
	}
}

func TestControlDispatchRejectsBadRequests(t *testing.T) {
	s := &controlServer{}
	for _, tc := range []struct{ line, want string }{
		{`{"cmd": "reboot"}`, "unknown command"},
		{`{"cmd": "status", "extra": 1}`, "bad request"},
		{`not json`, "bad request"},
		{`{"cmd": "set-policy", "policy": "static"}`, "permission denied"},
	} {
		resp := s.dispatch([]byte(tc.line), 1000) // a non-root peer
		if resp.OK || !strings.Contains(resp.Error, tc.want) {
			t.Errorf("%s: resp %+v, want error containing %q", tc.line, resp, tc.want)
		}
	}
}

// The scheduler, the control socket and Close save concurrently: every save
// succeeds, the file left is one whole checkpoint, and no temp file stays.
func TestCheckpointConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	const writers, saves = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*saves)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range saves {
				lent := make([]int, 1+(w+i)%8) // sizes differ, so torn writes show
				errs <- saveCheckpoint(dir, Checkpoint{PID: w*1000 + i, Policy: "dynamic", Config: "taichi", Lent: lent})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent save: %v", err)
		}
	}
	got, err := loadCheckpoint(dir)
	if err != nil || got == nil {
		t.Fatalf("after concurrent saves: %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("state dir holds %v, want only state.json", names)
	}
}
