// Package testbed builds the network namespaces and veth pairs that stand
// for a DPU's packet path on one Linux host, so the DP loop, the probe, the
// traffic generator and the eval run on real kernel packet I/O without
// touching any other network.
//
// Topology (every name derived from Options.Prefix):
//
//	<p>-gen                <p>-nic (the NIC's accelerator)              <p>-dp                 <p>-sink
//	gen0 GenIP --veth-- nic-in ==[bridge nic-br]== nic-out --veth-- dp0 (DP RX, reflect)
//	                                                              dp1 (forward out) --veth-- sink0 SinkIP
//
// Packets from the generator enter the nic namespace on NICIn (the probe
// attaches there) and the kernel bridges them out NICOut to DPIface, one hop
// later: that hop is the probe's lead time. In reflect mode the DP loop sends
// them back the same way. In forward mode it sends them out DPOutIface to the
// sink namespace, where the generator's receive socket lives.
//
// The DP side carries no IP address: the DP loop owns DPIface and DPOutIface
// like a DPDK port, and an address there would make the dp namespace's kernel
// answer the generator's UDP with ICMP errors. IPv6 is disabled in every
// namespace so the links carry only the generator's packets (no router
// solicitations or MLD reports that a probe would count). Neighbour entries are
// static, so no ARP is needed.
package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/internal/netns"
)

// Options selects the testbed instance.
type Options struct {
	// Prefix names the instance: namespaces are "<Prefix>-gen", "-nic",
	// "-dp" and "-sink". Parallel users pick different prefixes (tests
	// include their pid).
	Prefix string
}

// Fixed interface names. Each lives in its own namespace, so they cannot
// collide across instances and stay well under the 15-character limit.
const (
	genIface    = "gen0"
	nicIn       = "nic-in"
	nicOut      = "nic-out"
	nicBridge   = "nic-br"
	dpIface     = "dp0"
	dpOutIface  = "dp1"
	sinkIface   = "sink0"
	subnetBits  = 24
	maxPrefixLn = 40
)

// Fixed, locally administered addresses: every instance is isolated in its
// own namespaces, so all instances can share them.
var (
	genIP  = netip.MustParseAddr("10.77.0.1")
	dpIP   = netip.MustParseAddr("10.77.0.2")
	sinkIP = netip.MustParseAddr("10.77.1.2")

	genMAC    = net.HardwareAddr{0x02, 0x7a, 0x00, 0x00, 0x00, 0x01}
	nicInMAC  = net.HardwareAddr{0x02, 0x7a, 0x00, 0x00, 0x01, 0x01}
	nicOutMAC = net.HardwareAddr{0x02, 0x7a, 0x00, 0x00, 0x01, 0x02}
	dpMAC     = net.HardwareAddr{0x02, 0x7a, 0x00, 0x00, 0x00, 0x02}
	dpOutMAC  = net.HardwareAddr{0x02, 0x7a, 0x00, 0x00, 0x02, 0x02}
)

// Testbed describes one instance. All fields are plain data: Layout computes
// them without touching the kernel; Up makes them real.
type Testbed struct {
	Prefix string

	GenNS, NICNS, DPNS, SinkNS string

	GenIface   string // in GenNS: the generator sends here and receives reflected packets
	NICIn      string // in NICNS: where packets from the generator enter (probe attach point)
	NICOut     string // in NICNS: toward DPIface
	NICBridge  string // in NICNS: bridges NICIn and NICOut
	DPIface    string // in DPNS: the DP loop's RX (and reflect TX) interface
	DPOutIface string // in DPNS: the DP loop's forward-mode TX interface, toward SinkIface
	SinkIface  string // in SinkNS: receives forwarded packets

	GenIP  netip.Addr // on GenIface
	DPIP   netip.Addr // the address the generator sends to; owned by the DP loop, not the kernel
	SinkIP netip.Addr // on SinkIface; send here (via DPIP) to exercise forward mode

	GenMAC   net.HardwareAddr
	DPMAC    net.HardwareAddr // DPIface's MAC
	DPOutMAC net.HardwareAddr // DPOutIface's MAC
	// SinkMAC equals DPMAC, so a forwarder that leaves frames unchanged
	// (testpmd's io mode, or forward mode without a rewrite) still delivers
	// them to the sink's stack.
	SinkMAC net.HardwareAddr
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Layout returns the names and addresses of the instance opts selects,
// without creating anything.
func Layout(opts Options) (*Testbed, error) {
	p := opts.Prefix
	if p == "" || len(p) > maxPrefixLn || !prefixRE.MatchString(p) {
		return nil, fmt.Errorf("testbed: prefix %q: want 1-%d characters of [A-Za-z0-9_.-], starting with a letter or digit", p, maxPrefixLn)
	}
	return &Testbed{
		Prefix: p,
		GenNS:  p + "-gen", NICNS: p + "-nic", DPNS: p + "-dp", SinkNS: p + "-sink",
		GenIface: genIface, NICIn: nicIn, NICOut: nicOut, NICBridge: nicBridge,
		DPIface: dpIface, DPOutIface: dpOutIface, SinkIface: sinkIface,
		GenIP: genIP, DPIP: dpIP, SinkIP: sinkIP,
		GenMAC: clone(genMAC), DPMAC: clone(dpMAC), DPOutMAC: clone(dpOutMAC), SinkMAC: clone(dpMAC),
	}, nil
}

func clone(m net.HardwareAddr) net.HardwareAddr { return append(net.HardwareAddr(nil), m...) }

// Namespaces lists the instance's namespaces in creation order.
func (t *Testbed) Namespaces() []string { return []string{t.GenNS, t.NICNS, t.DPNS, t.SinkNS} }

// Up creates the instance opts selects, reusing whatever already exists
// (so it is idempotent and repairs a half-built instance). On error it
// leaves nothing half-applied that it created in this call.
func Up(ctx context.Context, opts Options) (*Testbed, error) {
	t, err := Layout(opts)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed: needs root (network namespaces)")
	}
	var createdNS []string
	for _, ns := range t.Namespaces() {
		if netns.Exists(ns) {
			continue
		}
		if err := ipCmd(ctx, "", "netns", "add", ns); err != nil {
			t.removeNamespaces(createdNS)
			return nil, err
		}
		createdNS = append(createdNS, ns)
	}
	if err := t.build(ctx); err != nil {
		t.removeNamespaces(createdNS)
		return nil, err
	}
	return t, nil
}

func (t *Testbed) build(ctx context.Context) error {
	for _, ns := range t.Namespaces() {
		// Quiet links: without IPv6 the kernel sends nothing on its own.
		if err := sysctl(ns, "net/ipv6/conf/default/disable_ipv6", "1"); err != nil {
			return err
		}
		if err := sysctl(ns, "net/ipv6/conf/all/disable_ipv6", "1"); err != nil {
			return err
		}
		if err := ipCmd(ctx, ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	pairs := []struct {
		ns, name string
		mac      net.HardwareAddr
		peerNS   string
		peer     string
		peerMAC  net.HardwareAddr
	}{
		{t.GenNS, t.GenIface, t.GenMAC, t.NICNS, t.NICIn, nicInMAC},
		{t.NICNS, t.NICOut, nicOutMAC, t.DPNS, t.DPIface, t.DPMAC},
		{t.DPNS, t.DPOutIface, t.DPOutMAC, t.SinkNS, t.SinkIface, t.SinkMAC},
	}
	for _, p := range pairs {
		if linkExists(ctx, p.ns, p.name) && linkExists(ctx, p.peerNS, p.peer) {
			continue
		}
		// A lone half of a pair cannot be reused: delete it (its peer dies with it).
		_ = ipCmd(ctx, p.ns, "link", "del", p.name)
		_ = ipCmd(ctx, p.peerNS, "link", "del", p.peer)
		if err := ipCmd(ctx, p.ns, "link", "add", p.name, "address", p.mac.String(), "type", "veth",
			"peer", "name", p.peer, "address", p.peerMAC.String(), "netns", p.peerNS); err != nil {
			return err
		}
	}
	if !linkExists(ctx, t.NICNS, t.NICBridge) {
		// STP off: ports forward at once instead of after a listening delay.
		if err := ipCmd(ctx, t.NICNS, "link", "add", t.NICBridge, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"); err != nil {
			return err
		}
	}
	for _, port := range []string{t.NICIn, t.NICOut} {
		if err := ipCmd(ctx, t.NICNS, "link", "set", port, "master", t.NICBridge); err != nil {
			return err
		}
	}
	// Static forwarding entries: the bridge never floods or ages out the DP's
	// MAC, which sends nothing while idle.
	if err := bridgeCmd(ctx, t.NICNS, "fdb", "replace", t.DPMAC.String(), "dev", t.NICOut, "master", "static"); err != nil {
		return err
	}
	if err := bridgeCmd(ctx, t.NICNS, "fdb", "replace", t.GenMAC.String(), "dev", t.NICIn, "master", "static"); err != nil {
		return err
	}

	if err := ipCmd(ctx, t.GenNS, "addr", "replace", prefixOf(t.GenIP), "dev", t.GenIface); err != nil {
		return err
	}
	if err := ipCmd(ctx, t.SinkNS, "addr", "replace", prefixOf(t.SinkIP), "dev", t.SinkIface); err != nil {
		return err
	}
	for _, l := range []struct{ ns, dev string }{
		{t.GenNS, t.GenIface}, {t.NICNS, t.NICIn}, {t.NICNS, t.NICOut}, {t.NICNS, t.NICBridge},
		{t.DPNS, t.DPIface}, {t.DPNS, t.DPOutIface}, {t.SinkNS, t.SinkIface},
	} {
		if err := ipCmd(ctx, l.ns, "link", "set", l.dev, "up"); err != nil {
			return err
		}
	}
	// The generator reaches the DP loop and, through it, the sink.
	if err := ipCmd(ctx, t.GenNS, "neigh", "replace", t.DPIP.String(), "lladdr", t.DPMAC.String(),
		"dev", t.GenIface, "nud", "permanent"); err != nil {
		return err
	}
	if err := ipCmd(ctx, t.GenNS, "route", "replace", subnetOf(t.SinkIP), "via", t.DPIP.String(), "dev", t.GenIface); err != nil {
		return err
	}
	// Real checksums on the generator's packets: with offload they leave
	// only partially summed, which a packet socket that sends them back
	// would turn into drops at the receiver. Best effort: the generator
	// also disables UDP checksums on its socket.
	_ = exec.CommandContext(ctx, "ip", "netns", "exec", t.GenNS, "ethtool", "-K", t.GenIface, "tx", "off").Run()
	return t.waitReady(ctx)
}

// readyTimeout bounds the wait for links to become operational; the kernel's
// link watcher applies carrier changes within about a second.
const readyTimeout = 5 * time.Second

// waitReady waits until every link is operationally up with its real qdisc
// attached. Until the kernel's link watcher has run, a fresh veth still has
// the noop qdisc and silently drops what is sent through it.
func (t *Testbed) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	links := []struct{ ns, dev string }{
		{t.GenNS, t.GenIface}, {t.NICNS, t.NICIn}, {t.NICNS, t.NICOut}, {t.NICNS, t.NICBridge},
		{t.DPNS, t.DPIface}, {t.DPNS, t.DPOutIface}, {t.SinkNS, t.SinkIface},
	}
	for _, l := range links {
		for {
			out, err := exec.CommandContext(ctx, "ip", "-n", l.ns, "-j", "link", "show", "dev", l.dev).Output()
			if err == nil {
				var info []struct {
					OperState string `json:"operstate"`
					Qdisc     string `json:"qdisc"`
				}
				if json.Unmarshal(out, &info) == nil && len(info) == 1 &&
					info[0].OperState == "UP" && info[0].Qdisc != "noop" {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("testbed: link %s in %s not operational after %v", l.dev, l.ns, readyTimeout)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// prefixOf returns an interface address with the testbed's subnet length,
// e.g. "10.77.0.1/24".
func prefixOf(a netip.Addr) string { return netip.PrefixFrom(a, subnetBits).String() }

// subnetOf returns the subnet a belongs to, e.g. "10.77.1.0/24".
func subnetOf(a netip.Addr) string { return netip.PrefixFrom(a, subnetBits).Masked().String() }

// Down removes the instance: its namespaces, and with them every link,
// address, bridge and neighbour entry inside. It touches nothing else and
// succeeds when the instance does not exist.
func (t *Testbed) Down() error {
	var errs []error
	for _, ns := range t.Namespaces() {
		if !netns.Exists(ns) {
			continue
		}
		if err := ipCmd(context.Background(), "", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Down removes the instance opts selects (see (*Testbed).Down).
func Down(opts Options) error {
	t, err := Layout(opts)
	if err != nil {
		return err
	}
	return t.Down()
}

func (t *Testbed) removeNamespaces(names []string) {
	for _, ns := range names {
		_ = ipCmd(context.Background(), "", "netns", "del", ns)
	}
}

// State reports what exists of the instance: every namespace and link the
// layout names, with true when present.
func (t *Testbed) State(ctx context.Context) map[string]bool {
	st := map[string]bool{}
	links := map[string][]string{
		t.GenNS:  {t.GenIface},
		t.NICNS:  {t.NICIn, t.NICOut, t.NICBridge},
		t.DPNS:   {t.DPIface, t.DPOutIface},
		t.SinkNS: {t.SinkIface},
	}
	for _, ns := range t.Namespaces() {
		ok := netns.Exists(ns)
		st["netns "+ns] = ok
		for _, l := range links[ns] {
			st["link "+ns+"/"+l] = ok && linkExists(ctx, ns, l)
		}
	}
	return st
}

// Complete reports whether every namespace and link of the instance exists.
func (t *Testbed) Complete(ctx context.Context) bool {
	for _, ok := range t.State(ctx) {
		if !ok {
			return false
		}
	}
	return true
}

func linkExists(ctx context.Context, ns, name string) bool {
	args := []string{"link", "show", "dev", name}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return exec.CommandContext(ctx, "ip", args...).Run() == nil
}

func ipCmd(ctx context.Context, ns string, args ...string) error {
	return run(ctx, "ip", ns, args...)
}

func bridgeCmd(ctx context.Context, ns string, args ...string) error {
	return run(ctx, "bridge", ns, args...)
}

func run(ctx context.Context, tool, ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: %s %s: %v: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sysctl writes a per-namespace sysctl from a thread inside ns: /proc/sys/net
// shows the opening thread's namespace.
func sysctl(ns, key, value string) error {
	return netns.Do(ns, func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
			return fmt.Errorf("testbed: sysctl %s in %s: %w", key, ns, err)
		}
		return nil
	})
}

// RouteSinkReplies lets the sink's kernel answer the generator (ping
// SinkIP from GenNS) through a forwarder between DPIface and DPOutIface that
// sets destination MACs itself, such as OVS: a route back to GenIP's subnet
// on SinkIface and a static neighbour entry for GenIP with DPOutMAC (the
// forwarder's side of the link). Idempotent; Down removes it with the
// namespace.
func (t *Testbed) RouteSinkReplies(ctx context.Context) error {
	if err := ipCmd(ctx, t.SinkNS, "route", "replace", subnetOf(t.GenIP), "dev", t.SinkIface); err != nil {
		return err
	}
	return ipCmd(ctx, t.SinkNS, "neigh", "replace", t.GenIP.String(), "lladdr", t.DPOutMAC.String(),
		"dev", t.SinkIface, "nud", "permanent")
}

// PingSink sends count ICMP echoes from the generator to the sink, through
// whatever DP forwards between them (OVS, a forwarding loop), interval
// apart, and returns how many came back, with a one-line account. A reply
// counts if it comes back within two seconds of the last echo: ping(8)
// stops waiting two round trips after its last echo, so on a loaded
// machine a reply that was merely late was counted lost. Late is the
// latency benchmarks' business; lost is this check's.
func (t *Testbed) PingSink(ctx context.Context, count int, interval time.Duration) (int, string, error) {
	rep, err := echo(ctx, t.GenNS, t.SinkIP.As4(), count, interval, 2*time.Second)
	if err != nil {
		return rep.answered, rep.String(), fmt.Errorf("echo %s from %s: %w", t.SinkIP, t.GenNS, err)
	}
	return rep.answered, rep.String(), nil
}

// WaitSinkEcho waits until one echo from the generator to the sink comes
// back: a DP that just set up its ports may not poll them yet, and the
// nic bridge learns the path with the first frames. Bounded at tries
// echoes of at most 200 ms each.
func (t *Testbed) WaitSinkEcho(ctx context.Context, tries int) error {
	for range tries {
		if rep, err := echo(ctx, t.GenNS, t.SinkIP.As4(), 1, 0, 200*time.Millisecond); err == nil && rep.answered == 1 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("no echo from %s to %s after %d tries", t.GenNS, t.SinkIP, tries)
}

// SteerRX makes the kernel process the generator's packets on cpu from
// the NIC namespace's first hop on, as a host whose NIC queue interrupts
// that core does: RPS on NICIn hands each packet to cpu's backlog after the
// probe's XDP program has seen it, so the bridge, the veth to the DP
// namespace and the DP socket's receive path run there, not on the
// sender's CPU. cpu < 0 turns steering off (processing stays where the
// sender runs).
func (t *Testbed) SteerRX(ctx context.Context, cpu int) error {
	mask := "0"
	if cpu >= 0 {
		mask = fmt.Sprintf("%x", uint64(1)<<cpu)
		if cpu >= 64 {
			return fmt.Errorf("testbed: steer RX to cpu %d: only CPUs below 64", cpu)
		}
	}
	file := "/sys/class/net/" + t.NICIn + "/queues/rx-0/rps_cpus"
	// A namespace's sysfs is only visible to a mount made inside it:
	// `ip netns exec` makes one.
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", t.NICNS, "sh", "-c", "echo "+mask+" > "+file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: steer RX to cpu %d (%s in %s): %v: %s", cpu, file, t.NICNS, err, strings.TrimSpace(string(out)))
	}
	return nil
}
