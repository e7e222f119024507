package daemon

import (
	"os"
	"path/filepath"
	"strings"
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
	if _, err := os.Stat(filepath.Join(dir, "state.json.tmp")); err == nil {
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
