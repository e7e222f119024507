// Package ovs runs a private Open vSwitch with DPDK (Debian's
// openvswitch-switch-dpdk) and drives it from Go: its own database, sockets,
// pidfiles and logs in one directory, its own DPDK file prefix, its daemons
// in a chosen network namespace. It never touches the system's OVS service
// (/var/run/openvswitch, /etc/openvswitch): every path is explicit and
// OVS_RUNDIR, OVS_DBDIR and OVS_LOGDIR point into the instance's directory,
// so even the bridges' management sockets land there.
//
// DPDK runs without hugepages (--no-huge --legacy-mem; without --legacy-mem
// OVS adds --in-memory and EAL refuses --no-huge) and without PCI devices:
// ports are af_packet vdevs on kernel interfaces, as on a test host or a
// DPU's representors.
package ovs

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/internal/netns"
	"github.com/taichi-sched/taichi/internal/safename"
)

// PMDThreadPattern matches the comm name of OVS's PMD (poll mode driver)
// threads, "pmd-c<core>/id:<n>"; the id changes whenever OVS recreates the
// thread (for example when the last port of the datapath is removed).
const PMDThreadPattern = `^pmd-c[0-9]+/id:[0-9]+$`

// Paths of the Debian packages' binaries and schema.
const (
	VswitchdBinary = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
	schemaPath     = "/usr/share/openvswitch/vswitch.ovsschema"
	dpdkRuntimeDir = "/var/run/dpdk"
)

// DefaultRunRoot holds the run directories of instances whose Options leave
// RunDir empty.
const DefaultRunRoot = "/run/taichi-ovs"

// Limits checked before anything starts.
const (
	defaultMemoryMB = 512
	minMemoryMB     = 64
	maxMaxSleep     = 10 * time.Millisecond // OVS caps pmd-maxsleep at 10000 µs
	maxNameLen      = 64                    // keeps the DPDK runtime paths well under the socket limit
	sunPathMax      = 107                   // sockaddr_un.sun_path minus the NUL
	filePrefixBase  = "taichi-ovs-"
	startTimeout    = 60 * time.Second // bound on Start when ctx has no deadline
	stopTimeout     = 10 * time.Second // per daemon, after SIGTERM, before SIGKILL
	pollInterval    = 10 * time.Millisecond
)

// Options describes one private OVS instance.
type Options struct {
	// Name names the instance: the default RunDir and the DPDK --file-prefix
	// ("taichi-ovs-<Name>") derive from it. Checked with safename.
	Name string
	// RunDir is the instance's private directory for the database,
	// sockets, pidfiles and logs. It must not exist or be empty; Start
	// creates it and Stop removes it. Default DefaultRunRoot/<Name>.
	RunDir string
	// NetNS is the named network namespace (/run/netns/NAME) in which
	// ovsdb-server and ovs-vswitchd run and where the ports' interfaces
	// live; "" is the caller's namespace.
	NetNS string
	// PMDCPUs are the PMD threads' cores (other_config:pmd-cpu-mask);
	// empty leaves the choice to OVS.
	PMDCPUs []int
	// LcoreCPUs are the cores of DPDK's main lcore
	// (other_config:dpdk-lcore-mask) and of everything else but the PMDs:
	// both daemons start with this CPU affinity, which ovs-vswitchd's
	// threads (handlers, revalidators, EAL's interrupt, multi-process and
	// telemetry threads) inherit; the PMDs pin themselves to PMDCPUs.
	// Without it, EAL puts its control threads on the CPUs that are not
	// lcores, which are the PMD cores. Empty leaves all this to OVS.
	LcoreCPUs []int
	// MaxSleep is other_config:pmd-maxsleep: how long an idle PMD may
	// sleep between polls (µs granularity, at most 10ms); 0 busy-polls.
	MaxSleep time.Duration
	// MemoryMB is DPDK's memory (-m with --no-huge); default 512.
	MemoryMB int
}

// validate checks o and fills defaults; it touches nothing.
func (o *Options) validate() error {
	if err := safename.Check(o.Name); err != nil {
		return fmt.Errorf("ovs: name: %w", err)
	}
	if len(o.Name) > maxNameLen {
		return fmt.Errorf("ovs: name: %q is longer than %d bytes", o.Name, maxNameLen)
	}
	if o.RunDir == "" {
		o.RunDir = filepath.Join(DefaultRunRoot, o.Name)
	}
	if !filepath.IsAbs(o.RunDir) {
		return fmt.Errorf("ovs: run_dir: %q is not an absolute path", o.RunDir)
	}
	o.RunDir = filepath.Clean(o.RunDir)
	if o.RunDir == "/" {
		return errors.New("ovs: run_dir: must not be /")
	}
	// The longest socket Start creates; bridges' sockets are checked in Patch.
	if p := filepath.Join(o.RunDir, "vswitchd.ctl"); len(p) > sunPathMax {
		return fmt.Errorf("ovs: run_dir: %q is too long for a unix socket path (%s: %d > %d bytes)", o.RunDir, p, len(p), sunPathMax)
	}
	if o.NetNS != "" {
		if err := safename.Check(o.NetNS); err != nil {
			return fmt.Errorf("ovs: netns: %w", err)
		}
		if !netns.Exists(o.NetNS) {
			return fmt.Errorf("ovs: netns: %q does not exist (%s)", o.NetNS, netns.Path(o.NetNS))
		}
	}
	if err := checkCPUs("pmd_cpus", o.PMDCPUs); err != nil {
		return err
	}
	if err := checkCPUs("lcore_cpus", o.LcoreCPUs); err != nil {
		return err
	}
	if err := checkMaxSleep(o.MaxSleep); err != nil {
		return err
	}
	switch {
	case o.MemoryMB == 0:
		o.MemoryMB = defaultMemoryMB
	case o.MemoryMB < minMemoryMB:
		return fmt.Errorf("ovs: memory_mb: %d is below %d (DPDK's mempools for two ports need more)", o.MemoryMB, minMemoryMB)
	}
	return nil
}

func checkMaxSleep(d time.Duration) error {
	if d < 0 || d > maxMaxSleep {
		return fmt.Errorf("ovs: max_sleep: %v is outside [0, %v] (OVS's pmd-maxsleep cap)", d, maxMaxSleep)
	}
	return nil
}

// checkCPUs rejects negative, duplicate and absent CPUs: OVS would silently
// ignore a mask bit for a CPU the host does not have.
func checkCPUs(field string, cpus []int) error {
	seen := map[int]bool{}
	for _, c := range cpus {
		if c < 0 {
			return fmt.Errorf("ovs: %s: CPU %d is negative", field, c)
		}
		if seen[c] {
			return fmt.Errorf("ovs: %s: CPU %d listed twice", field, c)
		}
		seen[c] = true
		if _, err := os.Stat(fmt.Sprintf("/sys/devices/system/cpu/cpu%d", c)); err != nil {
			return fmt.Errorf("ovs: %s: CPU %d does not exist on this host", field, c)
		}
	}
	return nil
}

// cpuMask renders CPUs as OVS's hexadecimal core mask ("0x2" for CPU 1).
func cpuMask(cpus []int) string {
	var m big.Int
	for _, c := range cpus {
		m.SetBit(&m, c, 1)
	}
	return "0x" + m.Text(16)
}

// maxSleepMicros is pmd-maxsleep's value: whole microseconds.
func maxSleepMicros(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }

// FilePrefix returns the DPDK --file-prefix an instance named name uses;
// its runtime directory is /var/run/dpdk/<prefix>.
func FilePrefix(name string) string { return filePrefixBase + name }

// Instance is a running private OVS.
type Instance struct {
	opts       Options
	filePrefix string
	vswitchd   *daemon
	ovsdb      *daemon

	mu       sync.Mutex
	nextVdev int // af_packet vdev names must be unique for the process's life
	stopped  bool
	stopErr  error
}

// Paths inside RunDir.
func (i *Instance) path(name string) string { return filepath.Join(i.opts.RunDir, name) }

// PID returns ovs-vswitchd's pid.
func (i *Instance) PID() int { return i.vswitchd.pid }

// OVSDBPID returns ovsdb-server's pid.
func (i *Instance) OVSDBPID() int { return i.ovsdb.pid }

// UnixctlPath returns ovs-vswitchd's unixctl socket (what ovs-appctl -t and
// NewClient take).
func (i *Instance) UnixctlPath() string { return i.path("vswitchd.ctl") }

// DBSocket returns ovsdb-server's socket.
func (i *Instance) DBSocket() string { return i.path("db.sock") }

// RunDir returns the instance's private directory.
func (i *Instance) RunDir() string { return i.opts.RunDir }

// FilePrefix returns the instance's DPDK --file-prefix.
func (i *Instance) FilePrefix() string { return i.filePrefix }

// Options returns the options the instance runs with, defaults filled in.
func (i *Instance) Options() Options {
	o := i.opts
	o.PMDCPUs = slices.Clone(o.PMDCPUs)
	o.LcoreCPUs = slices.Clone(o.LcoreCPUs)
	return o
}

// Start creates the instance's database and starts ovsdb-server and
// ovs-vswitchd-dpdk in o.NetNS, then waits until DPDK is initialised
// (Open_vSwitch's dpdk_initialized is true). On any error it stops what it
// started and removes what it created.
func Start(ctx context.Context, o Options) (*Instance, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	for _, bin := range []string{VswitchdBinary, "ovsdb-server", "ovsdb-tool", "ovs-vsctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("ovs: %s not found (Debian package openvswitch-switch-dpdk): %w", bin, err)
		}
	}
	i := &Instance{opts: o, filePrefix: FilePrefix(o.Name)}
	if err := checkPrefixFree(i.filePrefix); err != nil {
		return nil, err
	}
	if err := makeRunDir(o.RunDir); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if err := i.start(ctx); err != nil {
		err = fmt.Errorf("ovs %s: start: %w%s", o.Name, err, i.logTails())
		if serr := i.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	return i, nil
}

func (i *Instance) start(ctx context.Context) error {
	o := i.opts
	db := i.path("conf.db")
	if err := i.run(ctx, "ovsdb-tool", "create", db, schemaPath); err != nil {
		return err
	}
	var err error
	i.ovsdb, err = i.startDaemon(ctx, "ovsdb-server", db,
		"--remote=punix:"+i.DBSocket(), "--unixctl="+i.path("ovsdb.ctl"),
		"--pidfile="+i.path("ovsdb-server.pid"), "--log-file="+i.path("ovsdb.log"), "--detach")
	if err != nil {
		return err
	}
	cfg := []string{
		"other_config:dpdk-init=true",
		fmt.Sprintf("other_config:dpdk-extra=--no-huge --legacy-mem -m %d --no-pci --file-prefix %s", o.MemoryMB, i.filePrefix),
		"other_config:pmd-maxsleep=" + maxSleepMicros(o.MaxSleep),
	}
	if len(o.PMDCPUs) > 0 {
		cfg = append(cfg, "other_config:pmd-cpu-mask="+cpuMask(o.PMDCPUs))
	}
	if len(o.LcoreCPUs) > 0 {
		cfg = append(cfg, "other_config:dpdk-lcore-mask="+cpuMask(o.LcoreCPUs))
	}
	// --no-wait: no ovs-vswitchd yet to acknowledge the change.
	args := append([]string{"--no-wait", "init", "--", "set", "Open_vSwitch", "."}, cfg...)
	if _, err := i.Vsctl(ctx, args...); err != nil {
		return err
	}
	i.vswitchd, err = i.startDaemon(ctx, VswitchdBinary, "unix:"+i.DBSocket(),
		"--unixctl="+i.UnixctlPath(), "--pidfile="+i.path("vswitchd.pid"),
		"--log-file="+i.path("vswitchd.log"), "--detach")
	if err != nil {
		return err
	}
	return i.waitDPDK(ctx)
}

// waitDPDK waits until ovs-vswitchd reports DPDK initialised, failing at
// once when the daemon exits (EAL errors abort it).
func (i *Instance) waitDPDK(ctx context.Context) error {
	for {
		out, err := i.Vsctl(ctx, "--no-wait", "get", "Open_vSwitch", ".", "dpdk_initialized")
		if err == nil && strings.TrimSpace(out) == "true" {
			return nil
		}
		if i.vswitchd.exited() {
			return errors.New("ovs-vswitchd exited before DPDK was initialised")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for dpdk_initialized: %w (last: %q, %v)", ctx.Err(), strings.TrimSpace(out), err)
		case <-time.After(pollInterval):
		}
	}
}

// checkPrefixFree refuses a DPDK file prefix another live process holds
// (EAL keeps a lock on its config file): Stop would remove that process's
// runtime directory. A stale directory from a dead process is reused.
func checkPrefixFree(prefix string) error {
	held, err := configLocked(filepath.Join(dpdkRuntimeDir, prefix, "config"))
	if err != nil {
		return fmt.Errorf("ovs: DPDK file prefix %q: %w", prefix, err)
	}
	if held {
		return fmt.Errorf("ovs: DPDK file prefix %q is in use by a running DPDK process (%s); pick another name", prefix, filepath.Join(dpdkRuntimeDir, prefix))
	}
	return nil
}

// makeRunDir creates dir (and its parents); an existing dir must be empty,
// because Stop removes it with everything inside.
func makeRunDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil && len(entries) > 0:
		return fmt.Errorf("ovs: run_dir: %s exists and is not empty (another instance, or one that was not stopped: stop it or remove the directory)", dir)
	case err == nil:
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("ovs: run_dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("ovs: run_dir: %w", err)
	}
	return nil
}

// env is the environment of every OVS command: the default run, database
// and log directories point into RunDir, so nothing reaches the system's
// /var/run/openvswitch.
func (i *Instance) env() []string {
	return append(os.Environ(), "OVS_RUNDIR="+i.opts.RunDir, "OVS_DBDIR="+i.opts.RunDir, "OVS_LOGDIR="+i.opts.RunDir)
}

// run runs an OVS tool and returns its stdout; the error carries stderr.
func (i *Instance) run(ctx context.Context, name string, args ...string) error {
	_, err := i.output(ctx, nil, name, args...)
	return err
}

func (i *Instance) output(ctx context.Context, stdin *strings.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = i.env()
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Vsctl runs ovs-vsctl against the instance's database. Without --no-wait
// among args, ovs-vsctl returns once ovs-vswitchd has applied the change.
func (i *Instance) Vsctl(ctx context.Context, args ...string) (string, error) {
	return i.DB().vsctl(ctx, args...)
}

// SetMaxSleep sets other_config:pmd-maxsleep (whole µs, 0 busy-polls) and
// returns once ovs-vswitchd has applied it.
func (i *Instance) SetMaxSleep(ctx context.Context, d time.Duration) error {
	return i.DB().SetMaxSleep(ctx, d)
}

// DB is the instance's database, as any other process would reach it.
func (i *Instance) DB() DB { return DB{Socket: i.DBSocket(), env: i.env()} }

// logTails returns the end of both daemons' logs, for start errors (Stop
// removes the files).
func (i *Instance) logTails() string {
	var b strings.Builder
	for _, name := range []string{"ovsdb.log", "vswitchd.log"} {
		data, err := os.ReadFile(i.path(name))
		if err != nil || len(data) == 0 {
			continue
		}
		const keep = 1500
		if len(data) > keep {
			data = data[len(data)-keep:]
		}
		fmt.Fprintf(&b, "\n%s (tail):\n%s", name, strings.TrimRight(string(data), "\n"))
	}
	return b.String()
}

// Stop stops ovs-vswitchd, then ovsdb-server (SIGTERM, a bounded wait for
// the process to exit, SIGKILL after), also any daemon of this RunDir that a
// failed start left without a known pid, then removes RunDir and the DPDK
// runtime directory. It is idempotent: later calls return the first result.
func (i *Instance) Stop() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return i.stopErr
	}
	i.stopped = true
	var errs []error
	for _, d := range []*daemon{i.vswitchd, i.ovsdb} {
		if d != nil {
			errs = append(errs, d.stop(stopTimeout))
		}
	}
	// A daemon whose launcher was killed (ctx expired during --detach) is
	// known only by its command line, which names a file in RunDir.
	errs = append(errs, killStrays(i.opts.RunDir, stopTimeout))
	if err := os.RemoveAll(i.opts.RunDir); err != nil {
		errs = append(errs, fmt.Errorf("ovs: remove run dir: %w", err))
	}
	if err := os.RemoveAll(filepath.Join(dpdkRuntimeDir, i.filePrefix)); err != nil {
		errs = append(errs, fmt.Errorf("ovs: remove DPDK runtime dir: %w", err))
	}
	i.stopErr = errors.Join(errs...)
	return i.stopErr
}
