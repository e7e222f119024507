package linuxsched

import (
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/taichi-sched/taichi/internal/testenv"
	"golang.org/x/sys/unix"
)

// A hybrid host as systemd sets it up, with the tricky parts of proc(5):
// several optional fields, none, a bind mount of a hierarchy elsewhere
// (later, must not win), a mount point with an escaped space, combined
// controllers and a named hierarchy.
const hybridMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
25 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 master:3 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/cpu\040set rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset,clone_children
90 22 0:33 / /mnt/again rw,relatime shared:40 - cgroup cgroup rw,cpu,cpuacct
`

func TestParseMountinfoHybrid(t *testing.T) {
	m, err := ParseMountinfo([]byte(hybridMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
		"cpuset": "/sys/fs/cgroup/cpu set", "name=systemd": "/sys/fs/cgroup/systemd",
	}
	for ctrl, path := range want {
		if got := m.V1Path(ctrl); got != path {
			t.Errorf("V1Path(%q) = %q, want %q", ctrl, got, path)
		}
	}
	for _, opt := range []string{"rw", "xattr", "clone_children", "nsdelegate"} {
		if _, ok := m.V1[opt]; ok {
			t.Errorf("mount option %q taken for a controller", opt)
		}
	}
	if m.Unified != "/sys/fs/cgroup/unified" {
		t.Errorf("Unified = %q", m.Unified)
	}
}

func TestParseMountinfoV2Only(t *testing.T) {
	m, err := ParseMountinfo([]byte("29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Unified != "/sys/fs/cgroup" || len(m.V1) != 0 || m.V1Path("cpu") != "" {
		t.Fatalf("%+v", m)
	}
}

func TestParseMountinfoRejectsBrokenLines(t *testing.T) {
	for _, bad := range []string{
		"36 31 0:33 / /x rw - cgroup",               // no super options
		"36 31 0:33 / /x rw cgroup cgroup rw,cpu",   // no separator
		"36 31 - / /x rw shared:1 cgroup cgroup rw", // separator too early
	} {
		if _, err := ParseMountinfo([]byte(bad + "\n")); err == nil || !strings.Contains(err.Error(), "mountinfo line 1") {
			t.Errorf("%q: err %v, want one naming line 1", bad, err)
		}
	}
}

// The real file of this machine parses, and where it says cpu is mounted
// there is a cpu hierarchy.
func TestParseMountinfoThisMachine(t *testing.T) {
	m, err := ReadCgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	if p := m.V1Path("cpu"); p != "" {
		if _, err := os.Stat(p + "/cpu.shares"); err != nil {
			t.Fatalf("cpu at %s: %v", p, err)
		}
	}
	if m.Unified != "" {
		if _, err := os.Stat(m.Unified + "/cgroup.procs"); err != nil {
			t.Fatalf("cgroup2 at %s: %v", m.Unified, err)
		}
	}
	if m.V1Path("cpu") == "" && m.Unified == "" {
		testenv.Require(t, "no cgroup mounted here")
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`: "/a b", `/t\011x\012`: "/t\tx\n", `/back\134slash`: `/back\slash`,
		`/short\04`: `/short\04`, `/not\089`: `/not\089`, `/plain`: "/plain",
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseCgroupFile(t *testing.T) {
	const file = "12:cpu,cpuacct:/system.slice/x:y.service\n" +
		"4:cpuset:/\n" +
		"1:name=systemd:/user.slice/a b\n" +
		"0::/user.slice/user-0.slice/session-1.scope\n"
	c, err := ParseCgroupFile([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 4 {
		t.Fatalf("%d entries", len(c))
	}
	for ctrl, want := range map[string]string{
		"cpu": "/system.slice/x:y.service", "cpuacct": "/system.slice/x:y.service", "cpuset": "/",
		"name=systemd": "/user.slice/a b", "memory": "",
	} {
		if got := c.V1(ctrl); got != want {
			t.Errorf("V1(%q) = %q, want %q", ctrl, got, want)
		}
	}
	if got := c.Unified(); got != "/user.slice/user-0.slice/session-1.scope" {
		t.Errorf("Unified() = %q", got)
	}
	if c[0].ID != 12 || !slices.Equal(c[0].Controllers, []string{"cpu", "cpuacct"}) || c[3].Controllers != nil {
		t.Errorf("entries %+v", c)
	}
	for _, bad := range []string{"cpu:/x", "x:cpu:/x", "-1:cpu:/x", "3:cpu:relative"} {
		if _, err := ParseCgroupFile([]byte("0::/\n" + bad + "\n")); err == nil || !strings.Contains(err.Error(), "cgroup line 2") {
			t.Errorf("%q: err %v, want one naming line 2", bad, err)
		}
	}
}

// The calling thread's real file parses and agrees with the process's.
func TestTaskCgroupsThisThread(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	c, err := TaskCgroups(os.Getpid(), tid)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseCgroupFile(whole)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) == 0 || !slices.EqualFunc(c, p, func(a, b CgroupEntry) bool { return a.ID == b.ID && a.Path == b.Path }) {
		t.Fatalf("thread %+v, process %+v", c, p)
	}
}

func TestParseStat(t *testing.T) {
	// A comm with spaces and a ')' inside, as prctl allows.
	line := "1234 (a) b (c) R 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 77 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
	comm, cpu, err := ParseStat([]byte(line))
	if err != nil || comm != "a) b (c" || cpu != 3 {
		t.Fatalf("ParseStat = %q %d %v", comm, cpu, err)
	}
	if _, _, err := ParseStat([]byte("1 (x) R 1 2 3\n")); err == nil {
		t.Fatal("short stat accepted")
	}
	if _, _, err := ParseStat([]byte("no parens")); err == nil {
		t.Fatal("stat without comm accepted")
	}
}

func TestReadThreadAndThreads(t *testing.T) {
	ts, err := Threads(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) < 2 {
		t.Fatalf("%d threads of a Go test process", len(ts))
	}
	me, err := ReadThread(0, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	online, err := OnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(online, me.LastCPU) || len(me.Affinity) == 0 || me.Comm == "" {
		t.Fatalf("%+v (online %v)", me, online)
	}
	if r, err := RunTime(os.Getpid(), os.Getpid()); err != nil || r <= 0 {
		t.Fatalf("run time of the main thread: %v %v", r, err)
	}
	if _, err := Threads(-1); err == nil {
		t.Fatal("no error for a missing process")
	}
}

func TestOnlineCPUsUnder(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(root+"/devices/system/cpu", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+"/devices/system/cpu/online", []byte("0-2,5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := OnlineCPUsUnder(root); err != nil || !slices.Equal(got, []int{0, 1, 2, 5}) {
		t.Fatalf("%v %v", got, err)
	}
	if err := os.WriteFile(root+"/devices/system/cpu/online", []byte("0-x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OnlineCPUsUnder(root); err == nil || !strings.Contains(err.Error(), "online") {
		t.Fatalf("bad list: %v", err)
	}
}
