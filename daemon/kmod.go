package daemon

import (
	"errors"
	"fmt"

	"github.com/taichi-sched/taichi/kmod"
)

// openKmod decides whether the kernel module backs the fast path: with
// /dev/taichi present (backend auto or kmod), DP loops also wait on its
// kicks and the daemon wakes a loop with one kick instead of a segment
// request. The CP pool itself stays a cgroup either way.
func (d *Daemon) openKmod() error {
	backend := d.cfg.VCPU.Backend
	if backend == "cgroup" {
		d.log.Info("fast path: segment wake requests (vcpu.backend cgroup)")
		return nil
	}
	dev, err := kmod.Open()
	switch {
	case err == nil:
		d.kmod = dev
		info, _ := dev.Info()
		d.log.Info("fast path: taichi kernel module", "device", kmod.DevicePath, "abi", info.ABIVersion, "kfunc", info.Kfunc)
		return nil
	case backend == "kmod":
		return fmt.Errorf("vcpu.backend: kmod, but %w (load taichi.ko, see kmod/module/README.md)", err)
	case errors.Is(err, kmod.ErrNotSupported):
		d.log.Info("fast path: segment wake requests (no " + kmod.DevicePath + ")")
		return nil
	default:
		d.log.Warn("kernel module present but unusable; using segment wake requests", "err", err)
		return nil
	}
}

// KmodStatus is the kernel module's view of each DP core.
type KmodStatus struct {
	Info  kmod.Info    `json:"info"`
	Stats []kmod.Stats `json:"stats"`
	Error string       `json:"error,omitempty"`
}

func (d *Daemon) kmodStatus() *KmodStatus {
	if d.kmod == nil {
		return nil
	}
	ks := &KmodStatus{}
	var err error
	if ks.Info, err = d.kmod.Info(); err != nil {
		ks.Error = err.Error()
	}
	for _, cpu := range d.cfg.DPCPUs {
		st, err := d.kmod.Stats(cpu)
		if err != nil {
			ks.Error = err.Error()
			continue
		}
		ks.Stats = append(ks.Stats, st)
	}
	return ks
}
