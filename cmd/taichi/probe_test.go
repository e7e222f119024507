package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/internal/testenv"
	"github.com/taichi-sched/taichi/probe"
	"github.com/taichi-sched/taichi/testbed"
)

func TestParseQueueMap(t *testing.T) {
	m, err := parseQueueMap([]string{"0=1", "3=2"})
	if err != nil || len(m) != 2 || m[0] != 1 || m[3] != 2 {
		t.Fatalf("parseQueueMap = %v, %v", m, err)
	}
	for _, bad := range []string{"0", "a=1", "1=b", "=", "1=2=3"} {
		if _, err := parseQueueMap([]string{bad}); err == nil || !strings.HasPrefix(err.Error(), "queue-core:") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestProbeWatchBadInputExit2(t *testing.T) {
	for _, args := range [][]string{
		{"--iface", "x", "--backend", "nope"},
		{"--iface", "x", "--duration", "0s"},
		{"--iface", "x", "--queue-core", "1:2"},
		{"--iface", "x", "--core", "99"},
	} {
		cmd := probeWatchCmd()
		cmd.SetArgs(args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.Execute()
		ee, ok := err.(*exitError)
		if !ok || ee.code != 2 {
			t.Errorf("%v: err %v, want exit code 2", args, err)
		}
	}
}

// TestProbeWatchOnTestbed runs `taichi probe watch --json` on a testbed
// while sending: the report counts every packet and matches lead times.
func TestProbeWatchOnTestbed(t *testing.T) {
	testenv.NeedRoot(t, "network namespaces and BPF")
	ctx := context.Background()
	tb, err := testbed.Up(ctx, testbed.Options{Prefix: fmt.Sprintf("tpw%d", os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Down() })
	var out bytes.Buffer
	pinDir := fmt.Sprintf("%s/test-cmd-%d", probe.DefaultPinDir, os.Getpid())
	t.Cleanup(func() { _ = os.Remove(pinDir) })
	cmd := probeWatchCmd()
	cmd.SetArgs([]string{"--netns", tb.NICNS, "--iface", tb.NICIn, "--rx-netns", tb.DPNS, "--rx-iface", tb.DPIface,
		"--duration", "2s", "--json", "--pin-dir", pinDir})
	cmd.SetOut(&out)
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	// The link is pinned once attached: send only then, so every packet counts.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m, _ := filepath.Glob(pinDir + "/xdp-*"); len(m) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("probe never attached")
		}
	}
	s, err := probe.DialUDP(tb.GenNS, netip.AddrPortFrom(tb.DPIP, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 200
	for i := 1; i <= n; i++ {
		if err := s.Send(uint64(i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Mode    string `json:"mode"`
		Queues  []probe.QueueStats
		Events  int               `json:"events"`
		Matched int               `json:"matched"`
		LeadUs  probe.Percentiles `json:"lead_us"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(rep.Queues) != 1 || rep.Queues[0].Packets != n {
		t.Fatalf("queues %+v, want %d packets on queue 0\n%s", rep.Queues, n, out.String())
	}
	if rep.Events == 0 || rep.Events > n || rep.Matched == 0 || rep.LeadUs.N != rep.Matched || rep.Mode == "" {
		t.Fatalf("report %+v", rep)
	}
}
