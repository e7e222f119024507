// Package topology reads the machine's CPU layout from sysfs: which CPUs are
// online or isolated, SMT siblings and NUMA nodes. Validation, defaults and
// status use it; it changes nothing.
package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/procfs/sysfs"

	"github.com/taichi-sched/taichi/internal/cpuset"
	"github.com/taichi-sched/taichi/internal/linuxsched"
)

// DefaultSysfs is where sysfs is mounted.
const DefaultSysfs = "/sys"

// Topology is a snapshot of the CPU layout.
type Topology struct {
	Online   []int         `json:"online"`
	Isolated []int         `json:"isolated,omitempty"`
	Siblings map[int][]int `json:"siblings,omitempty"` // CPU -> its SMT thread siblings (itself included)
	Node     map[int]int   `json:"node,omitempty"`     // CPU -> NUMA node
}

// Read reads the topology under the sysfs mount root (normally "/sys").
func Read(root string) (*Topology, error) {
	cpuDir := filepath.Join(root, "devices/system/cpu")
	online, err := linuxsched.OnlineCPUsUnder(root)
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	t := &Topology{Online: online, Siblings: map[int][]int{}, Node: map[int]int{}}
	if iso, err := readList(filepath.Join(cpuDir, "isolated")); err == nil {
		t.Isolated = iso
	}
	fs, err := sysfs.NewFS(root)
	if err == nil {
		if cpus, err := fs.CPUs(); err == nil {
			for _, c := range cpus {
				id, err := strconv.Atoi(c.Number())
				if err != nil {
					continue
				}
				if topo, err := c.Topology(); err == nil && topo != nil {
					if sib, err := cpuset.Parse(topo.ThreadSiblingsList); err == nil {
						t.Siblings[id] = sib
					}
				}
			}
		}
	}
	nodes, _ := filepath.Glob(filepath.Join(root, "devices/system/node/node[0-9]*"))
	for _, n := range nodes {
		id, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(n), "node"))
		if err != nil {
			continue
		}
		cpus, err := readList(filepath.Join(n, "cpulist"))
		if err != nil {
			continue
		}
		for _, c := range cpus {
			t.Node[c] = id
		}
	}
	return t, nil
}

// Host reads the running machine's topology.
func Host() (*Topology, error) { return Read(DefaultSysfs) }

// IsOnline reports whether cpu is online.
func (t *Topology) IsOnline(cpu int) bool { return slices.Contains(t.Online, cpu) }

// IsIsolated reports whether cpu is in the kernel's isolcpus set.
func (t *Topology) IsIsolated(cpu int) bool { return slices.Contains(t.Isolated, cpu) }

// DefaultSplit is the embedded default's core split: the highest-numbered
// online CPU runs the data plane, the rest the control plane. A machine with a
// single CPU gets no DP core (nothing can be lent safely).
func (t *Topology) DefaultSplit() (dp, cp []int) {
	if len(t.Online) < 2 {
		return nil, slices.Clone(t.Online)
	}
	n := len(t.Online)
	return []int{t.Online[n-1]}, slices.Clone(t.Online[:n-1])
}

func readList(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return cpuset.Parse(string(b))
}
