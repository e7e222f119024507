package vcpu

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/prometheus/procfs"
)

// Selector says which processes are CP work. A process matches when any
// field matches it; an empty Selector matches nothing.
type Selector struct {
	// Units are systemd unit or slice names ("ssh.service",
	// "machine.slice"): a process matches when its systemd cgroup path has
	// a component of that name, so a slice takes everything below it.
	Units []string
	// Cgroups are absolute cgroup paths ("/docker/abc"): a process matches
	// when its path in any hierarchy is that path or below it.
	Cgroups []string
	// Commands match the command name (/proc/PID/comm) or the base name of
	// argv[0].
	Commands []*regexp.Regexp
	// PIDs are matched exactly.
	PIDs []int
}

// CheckUnit returns nil when u can name a systemd unit or slice (matched
// as a component of a cgroup path): not empty, no '/' or white space.
func CheckUnit(u string) error {
	if u == "" || strings.ContainsFunc(u, func(r rune) bool { return r == '/' || unicode.IsSpace(r) }) {
		return fmt.Errorf("%q is not a unit or slice name", u)
	}
	return nil
}

// CheckCgroupPath returns nil when p is a clean absolute cgroup path.
func CheckCgroupPath(p string) error {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return fmt.Errorf("%q is not a clean absolute cgroup path", p)
	}
	return nil
}

// Validate reports malformed entries, naming the field and index.
func (s Selector) Validate() error {
	var errs []error
	for i, u := range s.Units {
		if err := CheckUnit(u); err != nil {
			errs = append(errs, fmt.Errorf("units[%d]: %w", i, err))
		}
	}
	for i, c := range s.Cgroups {
		if err := CheckCgroupPath(c); err != nil {
			errs = append(errs, fmt.Errorf("cgroups[%d]: %w", i, err))
		}
	}
	for i, re := range s.Commands {
		if re == nil {
			errs = append(errs, fmt.Errorf("commands[%d]: nil regexp", i))
		}
	}
	for i, p := range s.PIDs {
		if p <= 0 {
			errs = append(errs, fmt.Errorf("pids[%d]: %d is not a process id", i, p))
		}
	}
	return errors.Join(errs...)
}

// procInfo is what selectors look at.
type procInfo struct {
	pid     int
	comm    string
	argv0   string // base name
	cgroups []procfs.Cgroup
}

func (s Selector) matches(p procInfo) bool {
	if slices.Contains(s.PIDs, p.pid) {
		return true
	}
	for _, re := range s.Commands {
		if re.MatchString(p.comm) || (p.argv0 != "" && re.MatchString(p.argv0)) {
			return true
		}
	}
	for _, cg := range p.cgroups {
		if len(s.Units) > 0 && isSystemdHierarchy(cg) {
			for _, comp := range strings.Split(cg.Path, "/") {
				if comp != "" && slices.Contains(s.Units, comp) {
					return true
				}
			}
		}
		for _, want := range s.Cgroups {
			if underPath(cg.Path, want) {
				return true
			}
		}
	}
	return false
}

// isSystemdHierarchy: the v1 name=systemd hierarchy or the v2 one, where
// systemd keeps its unit tree.
func isSystemdHierarchy(cg procfs.Cgroup) bool {
	return cg.HierarchyID == 0 || slices.Contains(cg.Controllers, "name=systemd")
}

// underPath reports p == dir or p below dir, comparing whole components.
func underPath(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// Scan lists the user-space processes (thread group ids, sorted) that sel
// matches, reading /proc. Kernel threads and the calling process are never
// listed. (A Scanner does the same pass after pass, for less.)
func Scan(sel Selector) ([]int, error) {
	s, err := NewScanner(sel)
	if err != nil {
		return nil, err
	}
	return s.Scan()
}
