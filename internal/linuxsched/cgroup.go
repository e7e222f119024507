package linuxsched

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CgroupMounts says where the cgroup hierarchies are mounted.
type CgroupMounts struct {
	// V1 maps a v1 controller ("cpu", "cpuset", "name=systemd") to the
	// mount point of the first hierarchy holding it.
	V1 map[string]string
	// Unified is the first cgroup2 mount point ("" when none).
	Unified string
}

// V1Path is the mount point of the v1 hierarchy with controller ctrl, ""
// when it is not mounted.
func (m CgroupMounts) V1Path(ctrl string) string { return m.V1[ctrl] }

// ReadCgroupMounts reads /proc/self/mountinfo.
func ReadCgroupMounts() (CgroupMounts, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return CgroupMounts{}, fmt.Errorf("cgroup mounts: %w", err)
	}
	return ParseMountinfo(b)
}

// ParseMountinfo finds the cgroup mounts in a mountinfo file (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// The optional fields before "-" vary in number; mount points escape space,
// tab, newline and backslash as octal (\040). A v1 hierarchy names its
// controllers among the super options ("rw,cpu,cpuacct"). The first mount of
// a hierarchy wins: bind mounts of it elsewhere come later.
func ParseMountinfo(b []byte) (CgroupMounts, error) {
	m := CgroupMounts{V1: map[string]string{}}
	for n, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 6 || len(f) < sep+4 {
			return CgroupMounts{}, fmt.Errorf("mountinfo line %d: %q: want 6+ fields, \"-\", fstype, source, super options", n+1, truncate(line))
		}
		fstype, superOpts := f[sep+1], f[sep+3]
		mountPoint := unescapeOctal(f[4])
		switch fstype {
		case "cgroup2":
			if m.Unified == "" {
				m.Unified = mountPoint
			}
		case "cgroup":
			for opt := range strings.SplitSeq(superOpts, ",") {
				if opt == "rw" || opt == "ro" || strings.HasPrefix(opt, "release_agent=") || opt == "clone_children" ||
					opt == "noprefix" || opt == "xattr" || opt == "cpuset_v2_mode" {
					continue
				}
				if _, ok := m.V1[opt]; !ok {
					m.V1[opt] = mountPoint
				}
			}
		}
	}
	return m, nil
}

// unescapeOctal undoes mountinfo's \ooo escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// CgroupEntry is one line of /proc/PID/cgroup: hierarchy id, its v1
// controllers (none for cgroup2, whose id is 0) and the path inside it.
type CgroupEntry struct {
	ID          int
	Controllers []string
	Path        string
}

// Cgroups is a task's cgroup membership.
type Cgroups []CgroupEntry

// V1 is the task's path in the v1 hierarchy holding ctrl ("" when none).
func (c Cgroups) V1(ctrl string) string {
	for _, e := range c {
		if slices.Contains(e.Controllers, ctrl) {
			return e.Path
		}
	}
	return ""
}

// Unified is the task's cgroup2 path ("" when it has none).
func (c Cgroups) Unified() string {
	for _, e := range c {
		if e.ID == 0 && len(e.Controllers) == 0 {
			return e.Path
		}
	}
	return ""
}

// ParseCgroupFile parses /proc/PID/cgroup ("4:cpu,cpuacct:/a/b", "0::/x").
// The path is everything after the second colon, so a path holding colons
// stays whole.
func ParseCgroupFile(b []byte) (Cgroups, error) {
	var out Cgroups
	for n, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("cgroup line %d: %q: want id:controllers:path", n+1, truncate(line))
		}
		id, err := strconv.Atoi(parts[0])
		if err != nil || id < 0 {
			return nil, fmt.Errorf("cgroup line %d: %q: hierarchy id %q is not a number", n+1, truncate(line), parts[0])
		}
		if !strings.HasPrefix(parts[2], "/") {
			return nil, fmt.Errorf("cgroup line %d: %q: path %q is not absolute", n+1, truncate(line), parts[2])
		}
		e := CgroupEntry{ID: id, Path: parts[2]}
		if parts[1] != "" {
			e.Controllers = strings.Split(parts[1], ",")
		}
		out = append(out, e)
	}
	return out, nil
}

// TaskCgroups reads thread tid's cgroups (pid 0: whichever process tid
// belongs to).
func TaskCgroups(pid, tid int) (Cgroups, error) {
	path := filepath.Join(taskDir(pid, tid), "cgroup")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCgroupFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// MoveThread moves thread tid into the v1 cgroup directory dir (its tasks
// file; cgroup.procs would move the whole process).
func MoveThread(dir string, tid int) error {
	if err := WriteCgroupFile(filepath.Join(dir, "tasks"), strconv.Itoa(tid)); err != nil {
		return fmt.Errorf("move tid %d to cgroup %s: %w", tid, dir, err)
	}
	return nil
}

// MoveThreadV2 moves thread tid into the cgroup2 directory dir (its
// cgroup.threads file): a threaded cgroup, or the thread root of tid's
// process.
func MoveThreadV2(dir string, tid int) error {
	if err := WriteCgroupFile(filepath.Join(dir, "cgroup.threads"), strconv.Itoa(tid)); err != nil {
		return fmt.Errorf("move tid %d to cgroup %s: %w", tid, dir, err)
	}
	return nil
}
