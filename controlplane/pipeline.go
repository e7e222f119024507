// Package controlplane is the control-plane side of taichi's benchmarks: a
// VM-startup pipeline that does the kind of work a DPU control plane does
// when a VM is created (a vport in its own network namespace, flow rules, a
// security group, QoS, a config file, and helper processes in bash, Python
// and Go, one of them kernel-heavy), each step as a separate, unmodified
// process that a Placer puts into the CP pool before it runs.
//
// Everything the pipeline creates lives in network namespaces named after
// its prefix and in its own state directory; Teardown removes all of it.
package controlplane

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/taichi-sched/taichi/internal/netns"
)

//go:embed scripts/helper.sh scripts/helper.py
var scripts embed.FS

// MaxVMID bounds VM ids so every VM gets its own /30 inside 10.200.0.0/16.
const MaxVMID = 1<<14 - 1

// Placer puts a freshly started CP process into the CP pool. Place is called
// with the pid after the process exists but before it runs its program, so
// the program and all its children run where the pool says.
type Placer interface {
	Place(pid int) error
}

// PlacerFunc adapts a function to Placer.
type PlacerFunc func(pid int) error

// Place calls f(pid).
func (f PlacerFunc) Place(pid int) error { return f(pid) }

// Options configure a Pipeline.
type Options struct {
	// Prefix starts the name of every network namespace the pipeline creates
	// ("<prefix>cp" for the vswitch side, "<prefix>vm-<id>" per VM). It must
	// be unique on the machine (include a pid) and short.
	Prefix string
	// StateDir receives the helper scripts and each VM's config JSON. It is
	// created by Setup and removed by Teardown, so it must not exist yet.
	StateDir string
	// Placer, if set, receives every CP process's pid before it runs.
	Placer Placer
	// GoHelper is the argv prefix that runs HelperMain (for the taichi
	// binary: its path and "cp-helper"). Required.
	GoHelper []string
	// GoHelperEnv is added to the Go helper's environment (tests use it to
	// make the test binary act as the helper).
	GoHelperEnv []string
	// Work scales every size-proportional step (1 when zero): rules, loop
	// counts and mapped bytes.
	Work float64
}

// VM is one VM-startup request.
type VM struct {
	ID   int // 0..MaxVMID, unique within a run
	Size int // vCPUs of the VM; work is proportional to it (1 when zero)
	// MTU of the vport (1500 when zero). Out-of-range values make the vport
	// step fail the way a bad request does in production.
	MTU int
}

// StepTime is how long one step of one VM took.
type StepTime struct {
	Step string  `json:"step"`
	MS   float64 `json:"ms"`
}

// Result is the outcome of one VM's startup.
type Result struct {
	ID        int        `json:"id"`
	Size      int        `json:"size"`
	OK        bool       `json:"ok"`
	StartupMS float64    `json:"startup_ms"` // request -> last step done (or the failure)
	Failed    string     `json:"failed_step,omitempty"`
	Error     string     `json:"error,omitempty"`
	Steps     []StepTime `json:"steps"`
}

// Step is one stage of a VM's startup. Run does the work for vm, using p to
// start processes so they are placed in the CP pool.
type Step struct {
	Name string
	Run  func(ctx context.Context, p *Pipeline, vm *vmState) error
}

// Pipeline runs VM startups. Create it with New, call Setup once, Start any
// number of batches, and Teardown at the end (also after failures).
type Pipeline struct {
	opts     Options
	hostNS   string
	python   string
	steps    []Step
	mu       sync.Mutex
	created  map[string]bool // network namespaces this pipeline added
	setupRan bool
}

// New validates opts and returns a pipeline with the default steps.
func New(opts Options) (*Pipeline, error) {
	if opts.Prefix == "" || strings.ContainsAny(opts.Prefix, "/ \t\n") {
		return nil, fmt.Errorf("controlplane: Prefix %q: must be non-empty without slashes or spaces", opts.Prefix)
	}
	if len(opts.Prefix) > 24 {
		return nil, fmt.Errorf("controlplane: Prefix %q: longer than 24 characters", opts.Prefix)
	}
	if opts.StateDir == "" {
		return nil, errors.New("controlplane: StateDir: required")
	}
	if len(opts.GoHelper) == 0 {
		return nil, errors.New("controlplane: GoHelper: required (argv that runs HelperMain)")
	}
	if opts.Work == 0 {
		opts.Work = 1
	}
	if opts.Work < 0 {
		return nil, fmt.Errorf("controlplane: Work %v: must be positive", opts.Work)
	}
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			return nil, errors.New("controlplane: python3 not found (Debian package python3)")
		}
	}
	for _, tool := range []string{"ip", "tc", "nft", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("controlplane: %s not found (Debian packages iproute2, nftables, bash)", tool)
		}
	}
	return &Pipeline{
		opts:    opts,
		hostNS:  opts.Prefix + "cp",
		python:  python,
		steps:   DefaultSteps(),
		created: map[string]bool{},
	}, nil
}

// HostNS is the namespace holding the vswitch ends of the vports.
func (p *Pipeline) HostNS() string { return p.hostNS }

// VMNS is the namespace of VM id.
func (p *Pipeline) VMNS(id int) string { return fmt.Sprintf("%svm-%d", p.opts.Prefix, id) }

// StateDir is where scripts and VM configs live.
func (p *Pipeline) StateDir() string { return p.opts.StateDir }

// Setup creates the state dir (with the helper scripts) and the vswitch
// namespace. It fails if the state dir already exists, so Teardown never
// removes anything the pipeline did not create.
func (p *Pipeline) Setup(ctx context.Context) error {
	if err := os.Mkdir(p.opts.StateDir, 0o755); err != nil {
		return fmt.Errorf("controlplane: state dir: %w", err)
	}
	p.setupRan = true
	for _, name := range []string{"helper.sh", "helper.py"} {
		b, err := scripts.ReadFile("scripts/" + name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(p.opts.StateDir, name), b, 0o755); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
	}
	if err := os.Mkdir(filepath.Join(p.opts.StateDir, "vms"), 0o755); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	// Each Go helper step runs under a name of its own (cp-spin, cp-mmap,
	// ...), as a VM's real steps are separate programs: blocker-aware
	// lending tells commands apart by name, and one binary name for every
	// step would make the user-mode spin share the kernel-heavy mmap's fate.
	if len(p.opts.GoHelper) > 0 {
		target, err := filepath.Abs(p.opts.GoHelper[0])
		if err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		for _, step := range helperSteps {
			if err := os.Symlink(target, p.helperPath(step)); err != nil {
				return fmt.Errorf("controlplane: %w", err)
			}
		}
	}
	if err := p.addNetns(ctx, p.hostNS, false); err != nil {
		return err
	}
	return nil
}

// addNetns creates a namespace and records it for Teardown; placed says
// whether the `ip` process belongs to the CP pool (VM work) or not (setup).
func (p *Pipeline) addNetns(ctx context.Context, name string, placed bool) error {
	if netns.Exists(name) {
		return fmt.Errorf("controlplane: netns %s already exists", name)
	}
	p.mu.Lock()
	p.created[name] = true
	p.mu.Unlock()
	var err error
	if placed {
		_, err = p.Exec(ctx, "", "ip", "netns", "add", name)
	} else {
		_, err = runUnplaced(ctx, "", "ip", "netns", "add", name)
	}
	return err
}

// Start requests all vms at once and waits until each has finished or
// failed. A failing step ends only its VM; the others go on.
func (p *Pipeline) Start(ctx context.Context, vms []VM) ([]Result, error) {
	if !p.setupRan {
		return nil, errors.New("controlplane: Start before Setup")
	}
	seen := map[int]bool{}
	for i, vm := range vms {
		if vm.ID < 0 || vm.ID > MaxVMID {
			return nil, fmt.Errorf("controlplane: vms[%d].ID %d: out of range 0..%d", i, vm.ID, MaxVMID)
		}
		if seen[vm.ID] {
			return nil, fmt.Errorf("controlplane: vms[%d].ID %d: duplicate", i, vm.ID)
		}
		if vm.Size < 0 {
			return nil, fmt.Errorf("controlplane: vms[%d].Size %d: negative", i, vm.Size)
		}
		seen[vm.ID] = true
	}
	results := make([]Result, len(vms))
	var wg sync.WaitGroup
	requested := time.Now()
	for i := range vms {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = p.startOne(ctx, requested, vms[i])
		}(i)
	}
	wg.Wait()
	return results, ctx.Err()
}

func (p *Pipeline) startOne(ctx context.Context, requested time.Time, vm VM) Result {
	st := newVMState(p, vm)
	res := Result{ID: vm.ID, Size: st.Size}
	for _, step := range p.steps {
		t0 := time.Now()
		err := step.Run(ctx, p, st)
		res.Steps = append(res.Steps, StepTime{Step: step.Name, MS: ms(time.Since(t0))})
		if err != nil {
			res.Failed = step.Name
			res.Error = err.Error()
			res.StartupMS = ms(time.Since(requested))
			return res
		}
	}
	res.OK = true
	res.StartupMS = ms(time.Since(requested))
	return res
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// Teardown deletes every namespace the pipeline created (their veths,
// qdiscs, filters and nft tables go with them), any leftover namespace with
// the pipeline's prefix, and the state dir. It is safe to call more than once.
func (p *Pipeline) Teardown() error {
	var errs []error
	p.mu.Lock()
	names := make([]string, 0, len(p.created))
	for n := range p.created {
		names = append(names, n)
	}
	p.mu.Unlock()
	// Namespaces a killed run left behind carry the same prefix.
	if ents, err := os.ReadDir(netns.Dir); err == nil {
		for _, e := range ents {
			n := e.Name()
			if n == p.hostNS || strings.HasPrefix(n, p.opts.Prefix+"vm-") {
				names = append(names, n)
			}
		}
	}
	done := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range names {
		if done[n] || !netns.Exists(n) {
			continue
		}
		done[n] = true
		if _, err := runUnplaced(ctx, "", "ip", "netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	p.mu.Lock()
	p.created = map[string]bool{}
	p.mu.Unlock()
	if p.setupRan {
		if err := os.RemoveAll(p.opts.StateDir); err != nil {
			errs = append(errs, err)
		}
		p.setupRan = false
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the pipeline still exists on the machine:
// namespaces with its prefix and the state dir. Empty after Teardown.
func (p *Pipeline) Leftovers() []string {
	var out []string
	if ents, err := os.ReadDir(netns.Dir); err == nil {
		for _, e := range ents {
			n := e.Name()
			if n == p.hostNS || strings.HasPrefix(n, p.opts.Prefix+"vm-") {
				out = append(out, "netns "+n)
			}
		}
	}
	if _, err := os.Stat(p.opts.StateDir); err == nil {
		out = append(out, "dir "+p.opts.StateDir)
	}
	return out
}
