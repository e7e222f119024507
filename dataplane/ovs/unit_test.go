package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParsePMDStatsRealOutput(t *testing.T) {
	data, err := os.ReadFile("testdata/pmd-stats-show.txt")
	if err != nil {
		t.Fatal(err)
	}
	stats, err := ParsePMDStats(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 { // the "main thread" block is not a PMD
		t.Fatalf("got %d PMDs, want 1: %+v", len(stats), stats)
	}
	want := PMDStats{NUMA: 0, CoreID: 1, PacketsReceived: 1, UpcallsFailed: 1, IdleCycles: 1499966, BusyCycles: 56290}
	if stats[0] != want {
		t.Fatalf("got %+v\nwant %+v", stats[0], want)
	}
}

func TestParsePMDStatsSeveralPMDsAndUnknownLines(t *testing.T) {
	out := "pmd thread numa_id 0 core_id 2:\n  packets received: 10\n  some future counter: abc\n  emc hits: 7\n" +
		"main thread:\n  packets received: 99\n" +
		"pmd thread numa_id 1 core_id 5:\n  packets received: 20\n  processing cycles: 300 (30.00%)\n"
	stats, err := ParsePMDStats(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 2 || stats[0].CoreID != 2 || stats[0].PacketsReceived != 10 || stats[0].EMCHits != 7 ||
		stats[1].NUMA != 1 || stats[1].CoreID != 5 || stats[1].PacketsReceived != 20 || stats[1].BusyCycles != 300 {
		t.Fatalf("got %+v", stats)
	}
}

func TestParsePMDStatsMalformed(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"pmd thread numa_id 0 core_id 1:\n  packets received: 12x\n", `line 2 "packets received: 12x"`},
		{"pmd thread numa_id 0 core_id 1:\n  idle cycles: -5 (1%)\n", `line 2 "idle cycles: -5 (1%)"`},
		{"pmd thread numa_id zero core_id 1:\n", `line 1 "pmd thread numa_id zero core_id 1:"`},
	} {
		_, err := ParsePMDStats(tc.out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePMDStats(%q) = %v, want an error naming %s", tc.out, err, tc.want)
		}
	}
}

func TestCPUMask(t *testing.T) {
	for _, tc := range []struct {
		cpus []int
		want string
	}{{[]int{1}, "0x2"}, {[]int{0, 1}, "0x3"}, {[]int{3, 0}, "0x9"}, {[]int{68}, "0x100000000000000000"}} {
		if got := cpuMask(tc.cpus); got != tc.want {
			t.Errorf("cpuMask(%v) = %s, want %s", tc.cpus, got, tc.want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	good := Options{Name: "t1", RunDir: "/tmp/x", PMDCPUs: []int{0}, MaxSleep: 10 * time.Millisecond}
	o := good
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if o.MemoryMB != defaultMemoryMB {
		t.Errorf("MemoryMB default %d, want %d", o.MemoryMB, defaultMemoryMB)
	}
	o = Options{Name: "t1"}
	if err := o.validate(); err != nil || o.RunDir != filepath.Join(DefaultRunRoot, "t1") {
		t.Errorf("default run dir: %q, %v", o.RunDir, err)
	}
	for _, tc := range []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.Name = "../x" }, "name"},
		{func(o *Options) { o.Name = strings.Repeat("a", 65) }, "name"},
		{func(o *Options) { o.RunDir = "rel/dir" }, "run_dir"},
		{func(o *Options) { o.RunDir = "/" + strings.Repeat("d", 100) }, "run_dir"},
		{func(o *Options) { o.NetNS = "no-such-ns-for-ovs-test" }, "netns"},
		{func(o *Options) { o.PMDCPUs = []int{-1} }, "pmd_cpus"},
		{func(o *Options) { o.PMDCPUs = []int{0, 0} }, "pmd_cpus"},
		{func(o *Options) { o.LcoreCPUs = []int{100000} }, "lcore_cpus"},
		{func(o *Options) { o.MaxSleep = 11 * time.Millisecond }, "max_sleep"},
		{func(o *Options) { o.MaxSleep = -time.Microsecond }, "max_sleep"},
		{func(o *Options) { o.MemoryMB = 10 }, "memory_mb"},
	} {
		o := good
		tc.mod(&o)
		err := o.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %s", o, err, tc.want)
		}
	}
}

func TestStartRejectsBadOptionsWithoutTouchingAnything(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	_, err := Start(context.Background(), Options{Name: "bad", RunDir: dir, MaxSleep: time.Second})
	if err == nil || !strings.Contains(err.Error(), "max_sleep") {
		t.Fatalf("Start: %v, want a max_sleep error", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("run dir after a rejected start: %v", err)
	}
}

// fakeUnixctl is a unix socket server speaking the unixctl protocol: it
// decodes concatenated JSON requests and answers through reply, writing
// each answer one byte at a time so the client must frame by JSON alone.
type fakeUnixctl struct {
	path    string
	accepts atomic.Int32
	reqs    chan request
	closed  chan struct{} // after the connection a "bye" came in is closed
	reply   func(req request) (resp map[string]any, hangUp bool)
}

func newFakeUnixctl(t *testing.T, reply func(request) (map[string]any, bool)) *fakeUnixctl {
	t.Helper()
	f := &fakeUnixctl{path: filepath.Join(t.TempDir(), "fake.ctl"), reqs: make(chan request, 100), closed: make(chan struct{}, 10), reply: reply}
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			f.accepts.Add(1)
			go f.serve(conn)
		}
	}()
	return f
}

func (f *fakeUnixctl) serve(conn net.Conn) {
	defer conn.Close()
	dec := json.NewDecoder(conn)
	for {
		var raw map[string]json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return
		}
		var req request
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &req)
		if string(raw["params"]) == "null" {
			req.Method = "PARAMS-NULL"
		}
		f.reqs <- req
		resp, hangUp := f.reply(req)
		if hangUp {
			if req.Method == "bye" {
				out, _ := json.Marshal(map[string]any{"id": req.ID, "result": "bye"})
				_, _ = conn.Write(out)
				conn.Close()
				f.closed <- struct{}{}
			}
			return
		}
		if resp == nil {
			continue // never answer
		}
		out, _ := json.Marshal(resp)
		for _, c := range out {
			if _, err := conn.Write([]byte{c}); err != nil {
				return
			}
		}
	}
}

func TestClientSpeaksUnixctlOverOnePersistentConnection(t *testing.T) {
	f := newFakeUnixctl(t, func(req request) (map[string]any, bool) {
		switch req.Method {
		case "version":
			return map[string]any{"id": req.ID, "result": "ovs 3.1.0\n", "error": nil}, false
		case "echo":
			return map[string]any{"id": req.ID, "result": strings.Join(req.Params, "|")}, false
		case "hangup", "bye":
			return nil, true
		case "silent":
			return nil, false
		case "badid":
			return map[string]any{"id": req.ID + 100, "result": ""}, false
		}
		return map[string]any{"id": req.ID, "error": "\"" + req.Method + "\" is not a valid command\n"}, false
	})
	c := NewClient(f.path)
	defer c.Close()
	ctx := context.Background()

	if out, err := c.Call(ctx, "version"); err != nil || out != "ovs 3.1.0\n" {
		t.Fatalf("version: %q, %v", out, err)
	}
	if req := <-f.reqs; req.Method != "version" || req.Params == nil || len(req.Params) != 0 {
		t.Fatalf("request %+v: want params [] (never null)", req)
	}
	if out, err := c.Call(ctx, "echo", "a", "b c"); err != nil || out != "a|b c" {
		t.Fatalf("echo: %q, %v", out, err)
	}
	<-f.reqs
	var cerr *CommandError
	if _, err := c.Call(ctx, "nosuch"); !errors.As(err, &cerr) || cerr.Message != `"nosuch" is not a valid command` {
		t.Fatalf("nosuch: %v, want a CommandError", err)
	}
	<-f.reqs
	if _, err := c.Call(ctx, "version"); err != nil {
		t.Fatalf("after a command error: %v", err)
	}
	<-f.reqs
	if n := f.accepts.Load(); n != 1 {
		t.Fatalf("%d connections for 4 calls, want 1", n)
	}

	// The server hangs up mid-call: the call fails (it may have run), the
	// next one reconnects.
	if _, err := c.Call(ctx, "hangup"); err == nil {
		t.Fatal("hangup: no error")
	}
	<-f.reqs
	if _, err := c.Call(ctx, "version"); err != nil {
		t.Fatalf("after hang-up: %v", err)
	}
	<-f.reqs
	if n := f.accepts.Load(); n != 2 {
		t.Fatalf("%d connections after a hang-up, want 2", n)
	}

	// The daemon answers, then closes the idle connection (a restart): the
	// next request fails to send and goes out again on a new connection.
	if out, err := c.Call(ctx, "bye"); err != nil || out != "bye" {
		t.Fatalf("bye: %q, %v", out, err)
	}
	<-f.reqs
	<-f.closed
	if _, err := c.Call(ctx, "version"); err != nil {
		t.Fatalf("after the daemon closed the idle connection: %v", err)
	}
	<-f.reqs
	if n := f.accepts.Load(); n != 3 {
		t.Fatalf("%d connections after the daemon closed one, want 3", n)
	}

	// A reply for another request drops the connection.
	if _, err := c.Call(ctx, "badid"); err == nil || !strings.Contains(err.Error(), "reply id") {
		t.Fatalf("badid: %v", err)
	}
	<-f.reqs

	// Cancellation ends a call the daemon never answers.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Call(cctx, "silent"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("silent call returned after %v", d)
	}
	if _, err := c.Call(ctx, "version"); err != nil {
		t.Fatalf("after a timed-out call: %v", err)
	}
}

func TestPMDPacketsCounterSumsCores(t *testing.T) {
	out := "pmd thread numa_id 0 core_id 1:\n  packets received: 10\npmd thread numa_id 0 core_id 3:\n  packets received: 32\n" +
		"pmd thread numa_id 0 core_id 4:\n  packets received: 1000\n"
	f := newFakeUnixctl(t, func(req request) (map[string]any, bool) {
		if req.Method != "dpif-netdev/pmd-stats-show" {
			return map[string]any{"id": req.ID, "error": "unexpected"}, false
		}
		return map[string]any{"id": req.ID, "result": out}, false
	})
	c := NewClient(f.path)
	defer c.Close()
	if n, err := c.PMDPacketsCounter([]int{1, 3})(); err != nil || n != 42 {
		t.Fatalf("cores 1,3: %d, %v; want 42", n, err)
	}
	if _, err := c.PMDPacketsCounter([]int{1, 2})(); err == nil || !strings.Contains(err.Error(), "core 2") {
		t.Fatalf("core 2: %v, want an error naming it", err)
	}
}
