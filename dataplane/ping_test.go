package dataplane_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taichi-sched/taichi/dataplane"
	"github.com/taichi-sched/taichi/internal/testenv"
)

// TestRealPingGetsReplies runs Debian's iputils ping from the generator
// namespace against the DP address, which no kernel owns: every reply comes
// from the loop's reflect mode. The generator's kernel verifies each reply's
// ICMP checksum (its Icmp InCsumErrors counter; this ping version does not
// flag bad checksums itself, though older ones print "BAD CHECKSUM"). Once with a busy-polling loop, once with a loop that yields
// between echoes and is woken by the packet.
func TestRealPingGetsReplies(t *testing.T) {
	testenv.NeedTool(t, "ping", "iputils-ping")
	tb := needTestbed(t, "p")
	const count = 20
	for _, tc := range []struct {
		name       string
		yieldAfter int
	}{{"busy-poll", -1}, {"yielding", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLoop(t, reflectConfig(tb), func(l *dataplane.Loop) {
				l.Control().SetYieldAfter(tc.yieldAfter)
			})
			before, snmpBefore := l.Stats(), icmpCounters(t, tb.GenNS)
			// -W bounds each reply, -w the whole run; the context is the backstop.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "ip", "netns", "exec", tb.GenNS,
				"ping", "-n", "-c", strconv.Itoa(count), "-i", "0.01", "-W", "1", "-w", "10", tb.DPIP.String()).CombinedOutput()
			text := string(out)
			if err != nil {
				t.Fatalf("ping: %v\n%s", err, text)
			}
			replies := regexp.MustCompile(`(?m)^\d+ bytes from .* icmp_seq=\d+ .*time=`).FindAllString(text, -1)
			if len(replies) != count || !strings.Contains(text, fmt.Sprintf("%d packets transmitted, %d received, 0%% packet loss", count, count)) {
				t.Fatalf("want %d replies and 0%% loss, got %d:\n%s", count, len(replies), text)
			}
			if strings.Contains(text, "DUP!") || strings.Contains(strings.ToUpper(text), "BAD CHECKSUM") {
				t.Fatalf("duplicate or corrupt replies:\n%s", text)
			}
			after, snmpAfter := l.Stats(), icmpCounters(t, tb.GenNS)
			if bad := snmpAfter["InCsumErrors"] - snmpBefore["InCsumErrors"]; bad != 0 {
				t.Fatalf("the generator's kernel counted %d replies with a bad ICMP checksum", bad)
			}
			if reps := snmpAfter["InEchoReps"] - snmpBefore["InEchoReps"]; reps != count {
				t.Fatalf("the generator's kernel accepted %d echo replies, want %d", reps, count)
			}
			if sent := after.TxPackets - before.TxPackets; sent < count {
				t.Fatalf("the loop sent %d frames for %d replies: someone else answered", sent, count)
			}
			if tc.yieldAfter == 0 && after.WakesRX == before.WakesRX {
				t.Fatalf("yielding loop never woken by a packet: %+v", after)
			}
		})
	}
}

// icmpCounters reads the Icmp line pair of /proc/net/snmp in namespace ns.
func icmpCounters(t *testing.T, ns string) map[string]int64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatalf("reading /proc/net/snmp in %s: %v", ns, err)
	}
	var rows [][]string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "Icmp:" {
			rows = append(rows, f[1:])
		}
	}
	if len(rows) != 2 || len(rows[0]) != len(rows[1]) {
		t.Fatalf("no Icmp counters in /proc/net/snmp:\n%s", out)
	}
	m := map[string]int64{}
	for i, name := range rows[0] {
		v, err := strconv.ParseInt(rows[1][i], 10, 64)
		if err != nil {
			t.Fatalf("Icmp %s: %q", name, rows[1][i])
		}
		m[name] = v
	}
	if _, ok := m["InCsumErrors"]; !ok {
		t.Fatalf("no InCsumErrors in the Icmp counters: %v", m)
	}
	return m
}
