package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// vmState is what the steps of one VM share.
type vmState struct {
	ID, Size, MTU int
	NS            string // the VM's namespace
	HostIf        string // vport end in the vswitch namespace
	HostMAC       net.HardwareAddr
	VMMAC         net.HardwareAddr
	HostIP, VMIP  netip.Addr // the VM's private /30: .1 vswitch side, .2 VM side
	Config        string     // path of the VM's config JSON
	work          float64
}

func newVMState(p *Pipeline, vm VM) *vmState {
	size := vm.Size
	if size == 0 {
		size = 1
	}
	mtu := vm.MTU
	if mtu == 0 {
		mtu = 1500
	}
	off := vm.ID * 4
	base := [4]byte{10, 200, byte(off >> 8), byte(off)}
	hostIP := netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 1})
	vmIP := netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + 2})
	return &vmState{
		ID: vm.ID, Size: size, MTU: mtu,
		NS:      p.VMNS(vm.ID),
		HostIf:  fmt.Sprintf("vp%d", vm.ID),
		HostMAC: net.HardwareAddr{0x02, 0x7d, 0, 0, byte(vm.ID >> 8), byte(vm.ID)},
		VMMAC:   net.HardwareAddr{0x02, 0x7c, 0, 0, byte(vm.ID >> 8), byte(vm.ID)},
		HostIP:  hostIP, VMIP: vmIP,
		Config: filepath.Join(p.opts.StateDir, "vms", fmt.Sprintf("vm-%d.json", vm.ID)),
		work:   p.opts.Work,
	}
}

// scaled returns n × size × work, at least 1.
func (v *vmState) scaled(n int) int {
	return max(1, int(math.Round(float64(n*v.Size)*v.work)))
}

// DefaultSteps is the VM-startup pipeline in order.
func DefaultSteps() []Step {
	return []Step{
		{Name: "vport", Run: stepVport},
		{Name: "qos", Run: stepQoS},
		{Name: "flows", Run: stepFlows},
		{Name: "secgroup", Run: stepSecGroup},
		{Name: "config", Run: stepConfig},
		{Name: "bash", Run: stepBash},
		{Name: "python", Run: stepPython},
		{Name: "go", Run: stepGo},
		{Name: "mmap", Run: stepMmap},
	}
}

// stepVport: the VM's namespace, a veth pair from the vswitch namespace into
// it, MACs, MTU, the /30 addresses and the VM's default route.
func stepVport(ctx context.Context, p *Pipeline, v *vmState) error {
	if err := p.addNetns(ctx, v.NS, true); err != nil {
		return err
	}
	host := fmt.Sprintf(`link add %[1]s type veth peer name eth0 netns %[2]s
link set %[1]s address %[3]s mtu %[4]d up
addr add %[5]s/30 dev %[1]s
`, v.HostIf, v.NS, v.HostMAC, v.MTU, v.HostIP)
	if _, err := p.Exec(ctx, host, "ip", "-n", p.hostNS, "-batch", "-"); err != nil {
		return err
	}
	vm := fmt.Sprintf(`link set lo up
link set eth0 address %[1]s mtu %[2]d up
addr add %[3]s/30 dev eth0
route add default via %[4]s dev eth0
`, v.VMMAC, v.MTU, v.VMIP, v.HostIP)
	_, err := p.Exec(ctx, vm, "ip", "-n", v.NS, "-batch", "-")
	return err
}

// stepQoS: an htb hierarchy on the vswitch end (the VM's guaranteed rate
// and ceiling) and a tbf shaper on the VM's egress.
func stepQoS(ctx context.Context, p *Pipeline, v *vmState) error {
	rate := v.Size * 100
	host := fmt.Sprintf(`qdisc add dev %[1]s root handle 1: htb default 10 r2q 1000
class add dev %[1]s parent 1: classid 1:1 htb rate %[2]dmbit ceil %[3]dmbit
class add dev %[1]s parent 1:1 classid 1:10 htb rate %[2]dmbit ceil %[3]dmbit
class add dev %[1]s parent 1:1 classid 1:20 htb rate 10mbit ceil %[2]dmbit
`, v.HostIf, rate, rate*2)
	if _, err := p.Exec(ctx, host, "tc", "-n", p.hostNS, "-batch", "-"); err != nil {
		return err
	}
	_, err := p.Exec(ctx, "", "tc", "-n", v.NS, "qdisc", "add", "dev", "eth0", "root",
		"tbf", "rate", strconv.Itoa(rate)+"mbit", "burst", "64kb", "latency", "50ms")
	return err
}

// stepFlows: u32 flow rules classifying the VM's traffic on its vport, 16
// per vCPU (u32 because flower and gact are not built into every kernel).
func stepFlows(ctx context.Context, p *Pipeline, v *vmState) error {
	var b strings.Builder
	n := v.scaled(16)
	for i := range n {
		class := "1:10"
		if i%4 == 3 {
			class = "1:20"
		}
		fmt.Fprintf(&b, "filter add dev %s parent 1: protocol ip prio %d u32 match ip dst %s/32 match ip dport %d 0xffff flowid %s\n",
			v.HostIf, 10+i%8, v.VMIP, 1024+i, class)
	}
	_, err := p.Exec(ctx, b.String(), "tc", "-n", p.hostNS, "-batch", "-")
	return err
}

// stepSecGroup: an nft security group inside the VM's namespace: drop by
// default, allow established flows and one rule per allowed port/peer.
func stepSecGroup(ctx context.Context, p *Pipeline, v *vmState) error {
	var b strings.Builder
	b.WriteString("table inet secgroup {\n chain ingress {\n  type filter hook input priority 0; policy drop;\n")
	b.WriteString("  ct state established,related accept\n  iif lo accept\n")
	for i := range v.scaled(8) {
		fmt.Fprintf(&b, "  ip saddr 10.%d.%d.0/24 tcp dport %d accept\n", 10+i/250, i%250, 2000+i)
	}
	b.WriteString(" }\n chain egress {\n  type filter hook output priority 0; policy accept;\n")
	fmt.Fprintf(&b, "  ip daddr != %s ip daddr 10.200.0.0/16 drop\n", netip.PrefixFrom(v.HostIP, 30).Masked())
	b.WriteString(" }\n}\n")
	_, err := p.Exec(ctx, b.String(), "ip", "netns", "exec", v.NS, "nft", "-f", "-")
	return err
}

// VMConfig is the network config each VM gets in the state dir.
type VMConfig struct {
	VM      int    `json:"vm"`
	Size    int    `json:"size"`
	NetNS   string `json:"netns"`
	Vport   string `json:"vport"`
	MAC     string `json:"mac"`
	MTU     int    `json:"mtu"`
	Address string `json:"address"`
	Gateway string `json:"gateway"`
	Rules   int    `json:"flow_rules"`
}

// stepConfig: the Go helper writes the VM's config JSON and reads it back.
func stepConfig(ctx context.Context, p *Pipeline, v *vmState) error {
	cfg := VMConfig{VM: v.ID, Size: v.Size, NetNS: v.NS, Vport: v.HostIf, MAC: v.VMMAC.String(), MTU: v.MTU,
		Address: v.VMIP.String() + "/30", Gateway: v.HostIP.String(), Rules: v.scaled(16)}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	_, err = p.goHelper(ctx, string(b), "config", v.Config)
	return err
}

func stepBash(ctx context.Context, p *Pipeline, v *vmState) error {
	_, err := p.Exec(ctx, "", "bash", filepath.Join(p.opts.StateDir, "helper.sh"), v.Config, strconv.Itoa(v.scaled(1)))
	return err
}

func stepPython(ctx context.Context, p *Pipeline, v *vmState) error {
	_, err := p.Exec(ctx, "", p.python, filepath.Join(p.opts.StateDir, "helper.py"), v.Config, strconv.Itoa(v.scaled(1)))
	return err
}

func stepGo(ctx context.Context, p *Pipeline, v *vmState) error {
	_, err := p.goHelper(ctx, "", "spin", strconv.Itoa(v.scaled(1)))
	return err
}

// stepMmap: the kernel-heavy step: populating and unmapping large anonymous
// mappings spends its time in page-table code that does not preempt here.
func stepMmap(ctx context.Context, p *Pipeline, v *vmState) error {
	_, err := p.goHelper(ctx, "", "mmap", strconv.Itoa(v.scaled(32)), "4")
	return err
}

// helperSteps are the Go helper's subcommands, each run through a link
// named after it (helperPath).
var helperSteps = []string{"config", "spin", "mmap"}

// helperPath is the link a helper step runs through: its command name is
// cp-<step>.
func (p *Pipeline) helperPath(step string) string {
	return filepath.Join(p.opts.StateDir, "cp-"+step)
}

func (p *Pipeline) goHelper(ctx context.Context, stdin string, args ...string) (string, error) {
	argv := append(append([]string(nil), p.opts.GoHelper...), args...)
	if len(args) > 0 && slices.Contains(helperSteps, args[0]) {
		argv[0] = p.helperPath(args[0])
	}
	return p.execEnv(ctx, p.opts.GoHelperEnv, stdin, argv...)
}
