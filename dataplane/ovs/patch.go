package ovs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/taichi-sched/taichi/internal/safename"
)

// Port is one side of a patch: a kernel interface in the instance's
// network namespace, opened as a DPDK af_packet port.
type Port struct {
	Iface string
	// PeerMAC is the destination MAC written into frames sent out of this
	// port (the next hop's address); nil leaves frames unchanged.
	PeerMAC net.HardwareAddr
}

// OpenFlow port numbers Patch requests for its two ports.
const (
	ofportA = 1
	ofportB = 2
)

const (
	maxIfaceLen = 15 // IFNAMSIZ - 1: netdev bridges create a tap device with the bridge's name
	portTimeout = 30 * time.Second
)

func checkPort(field string, p Port) error {
	if err := safename.Check(p.Iface); err != nil {
		return fmt.Errorf("ovs: %s.iface: %w", field, err)
	}
	if len(p.Iface) > maxIfaceLen {
		return fmt.Errorf("ovs: %s.iface: %q is longer than %d bytes", field, p.Iface, maxIfaceLen)
	}
	if strings.ContainsAny(p.Iface, ",=") {
		return fmt.Errorf("ovs: %s.iface: %q cannot be used in dpdk-devargs", field, p.Iface)
	}
	if p.PeerMAC != nil && len(p.PeerMAC) != 6 {
		return fmt.Errorf("ovs: %s.peer_mac: %v is not an Ethernet MAC", field, p.PeerMAC)
	}
	return nil
}

// BridgeSocket returns the OpenFlow management socket ovs-vswitchd
// creates for bridge in OVS_RUNDIR (ovs-ofctl takes "unix:" + it).
func (i *Instance) BridgeSocket(bridge string) string { return i.path(bridge + ".mgmt") }

// Patch adds bridge (userspace datapath, fail-mode secure so there is no
// NORMAL flow), a and b as DPDK af_packet ports (OpenFlow ports 1 and 2),
// and the flows a->b and b->a that rewrite the destination MAC to the
// outgoing side's PeerMAC. It returns once both ports are up in OVS and the
// flows are installed; on error it deletes the bridge again. The bridge
// must not exist yet.
func (i *Instance) Patch(ctx context.Context, bridge string, a, b Port) error {
	if err := safename.Check(bridge); err != nil {
		return fmt.Errorf("ovs: bridge: %w", err)
	}
	if len(bridge) > maxIfaceLen {
		return fmt.Errorf("ovs: bridge: %q is longer than %d bytes", bridge, maxIfaceLen)
	}
	if p := i.BridgeSocket(bridge); len(p) > sunPathMax {
		return fmt.Errorf("ovs: bridge: management socket %s is longer than %d bytes", p, sunPathMax)
	}
	if err := checkPort("a", a); err != nil {
		return err
	}
	if err := checkPort("b", b); err != nil {
		return err
	}
	if a.Iface == b.Iface {
		return fmt.Errorf("ovs: a.iface and b.iface are both %q", a.Iface)
	}
	// Checked first: the rollback below deletes the bridge, which must
	// never be one that existed before.
	switch _, err := i.Vsctl(ctx, "--no-wait", "br-exists", bridge); {
	case err == nil:
		return fmt.Errorf("ovs %s: patch: bridge %s exists (Unpatch it first)", i.opts.Name, bridge)
	case !isExitCode(err, 2): // 2: no such bridge
		return fmt.Errorf("ovs %s: patch %s: %w", i.opts.Name, bridge, err)
	}
	if err := i.patch(ctx, bridge, a, b); err != nil {
		// A fresh context: ctx may be what failed.
		cctx, cancel := context.WithTimeout(context.Background(), portTimeout)
		defer cancel()
		if _, derr := i.Vsctl(cctx, "--if-exists", "del-br", bridge); derr != nil {
			err = errors.Join(err, derr)
		}
		return fmt.Errorf("ovs %s: patch %s: %w", i.opts.Name, bridge, err)
	}
	return nil
}

func (i *Instance) patch(ctx context.Context, bridge string, a, b Port) error {
	i.mu.Lock()
	va, vb := i.nextVdev, i.nextVdev+1
	i.nextVdev += 2
	i.mu.Unlock()

	args := []string{"add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=netdev", "fail-mode=secure",
		"other_config:disable-in-band=true"}
	for _, p := range []struct {
		port   Port
		vdev   int
		ofport int
	}{{a, va, ofportA}, {b, vb, ofportB}} {
		args = append(args, "--", "add-port", bridge, p.port.Iface, "--", "set", "Interface", p.port.Iface, "type=dpdk",
			fmt.Sprintf("options:dpdk-devargs=net_af_packet%d,iface=%s", p.vdev, p.port.Iface),
			fmt.Sprintf("ofport_request=%d", p.ofport))
	}
	// Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied it.
	if _, err := i.Vsctl(ctx, args...); err != nil {
		return err
	}
	for _, p := range []Port{a, b} {
		if err := i.waitPortUp(ctx, p.Iface); err != nil {
			return err
		}
	}
	flows := flow(ofportA, ofportB, b.PeerMAC) + flow(ofportB, ofportA, a.PeerMAC)
	_, err := i.output(ctx, strings.NewReader(flows), "ovs-ofctl", "replace-flows", "unix:"+i.BridgeSocket(bridge), "-")
	return err
}

// flow is one OpenFlow rule forwarding in to out, rewriting the
// destination MAC when mac is set.
func flow(in, out int, mac net.HardwareAddr) string {
	actions := fmt.Sprintf("output:%d", out)
	if mac != nil {
		actions = "mod_dl_dst:" + mac.String() + "," + actions
	}
	return fmt.Sprintf("in_port=%d,actions=%s\n", in, actions)
}

// waitPortUp waits until iface has its OpenFlow port and link state up,
// failing at once when OVS reports an error for it (bad devargs, missing
// interface).
func (i *Instance) waitPortUp(ctx context.Context, iface string) error {
	ctx, cancel := context.WithTimeout(ctx, portTimeout)
	defer cancel()
	for {
		out, err := i.Vsctl(ctx, "--no-wait", "get", "Interface", iface, "ofport", "link_state", "error")
		if err == nil {
			f := strings.Split(strings.TrimSpace(out), "\n")
			if len(f) == 3 {
				if f[2] != "[]" {
					return fmt.Errorf("port %s: %s", iface, f[2])
				}
				if f[0] != "-1" && f[0] != "[]" && f[1] == "up" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("port %s not up: %w (ovs-vsctl: %q, %v)", iface, ctx.Err(), strings.TrimSpace(out), err)
		case <-time.After(pollInterval):
		}
	}
}

// Unpatch deletes bridge and its ports. Removing the datapath's last port
// makes OVS end its PMD threads; the next Patch creates new ones (new
// thread ids), which is how a test recreates a PMD. A missing bridge is not
// an error.
func (i *Instance) Unpatch(ctx context.Context, bridge string) error {
	if err := safename.Check(bridge); err != nil {
		return fmt.Errorf("ovs: bridge: %w", err)
	}
	_, err := i.Vsctl(ctx, "--if-exists", "del-br", bridge)
	return err
}

// isExitCode reports whether err is a command's exit with status code.
func isExitCode(err error, code int) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == code
}
