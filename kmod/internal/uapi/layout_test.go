package uapi

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/taichi-sched/taichi/internal/testenv"
)

// cStruct pairs a Go mirror with its C struct and the C field names in
// declaration order.
type cStruct struct {
	name   string
	goType reflect.Type
	fields []string
}

var cStructs = []cStruct{
	{"taichi_info", reflect.TypeOf(Info{}), []string{"abi_version", "nr_cpus", "flags", "ring_len"}},
	{"taichi_register", reflect.TypeOf(Register{}), []string{"flags", "cpu"}},
	{"taichi_wait", reflect.TypeOf(Wait{}), []string{"timeout_ns", "kick_ns", "flags", "result"}},
	{"taichi_kick", reflect.TypeOf(Kick{}), []string{"cpus", "flags", "woken"}},
	{"taichi_stats", reflect.TypeOf(Stats{}), []string{"cpu", "flags", "dp_tid", "info_flags", "kicks",
		"kicks_no_dp", "wakes", "timeouts", "ipis", "ipis_busy", "blockers", "blockers_dropped",
		"lat_count", "lat_sum_ns", "lat_max_ns", "hist"}},
	{"taichi_blocker", reflect.TypeOf(Blocker{}), []string{"seq", "time_ns", "kick_ns", "wait_ns", "pid",
		"tgid", "cpu", "preempt_count", "flags", "pad", "comm", "symbol", "callers"}},
	{"taichi_blockers", reflect.TypeOf(Blockers{}), []string{"records", "cpu", "max", "flags", "count"}},
	{"taichi_hold", reflect.TypeOf(Hold{}), []string{"usec", "flags"}},
}

// cConstants are compared with the Go constants of the same meaning.
var cConstants = map[string]uint64{
	"TAICHI_ABI_VERSION":      ABIVersion,
	"TAICHI_MAX_CPUS":         MaxCPUs,
	"TAICHI_ALL_CPUS":         AllCPUs,
	"TAICHI_HIST_BUCKETS":     HistBuckets,
	"TAICHI_HIST_SHIFT":       HistShift,
	"TAICHI_COMM_LEN":         CommLen,
	"TAICHI_SYM_LEN":          SymLen,
	"TAICHI_CALLERS":          Callers,
	"TAICHI_MAX_RECORDS":      MaxRecords,
	"TAICHI_MAX_WAIT_NS":      MaxWaitNs,
	"TAICHI_MAX_HOLD_US":      MaxHoldMicros,
	"TAICHI_WAIT_NONBLOCK":    WaitNonblock,
	"TAICHI_WAIT_NONE":        WaitNone,
	"TAICHI_WAIT_KICKED":      WaitKicked,
	"TAICHI_WAIT_TIMEOUT":     WaitTimeout,
	"TAICHI_BLOCKERS_CONSUME": BlockersConsume,
	"TAICHI_INFO_KFUNC":       InfoKfunc,
	"TAICHI_INFO_TEST_HOLD":   InfoTestHold,
	"TAICHI_INFO_LAT_SWITCH":  InfoLatSwitch,
	"TAICHI_INFO_EXIT_HOOK":   InfoExitHook,
	"TAICHI_BLK_PREEMPT_OFF":  BlockerPreemptOff,
	"TAICHI_BLK_SOFTIRQ":      BlockerSoftirq,
	"TAICHI_BLK_NO_KPREEMPT":  BlockerNoKPreempt,
	"TAICHI_BLK_WAITED":       BlockerWaited,
	"TAICHI_IOC_INFO":         uint64(IocInfo),
	"TAICHI_IOC_REGISTER":     uint64(IocRegister),
	"TAICHI_IOC_UNREGISTER":   uint64(IocUnregister),
	"TAICHI_IOC_WAIT":         uint64(IocWait),
	"TAICHI_IOC_KICK":         uint64(IocKick),
	"TAICHI_IOC_STATS":        uint64(IocStats),
	"TAICHI_IOC_BLOCKERS":     uint64(IocBlockers),
	"TAICHI_IOC_TEST_HOLD":    uint64(IocTestHold),
}

// cTargets maps GOARCH to the clang target whose C ABI the Go mirrors must
// match: the test compares the layout of the architecture it runs as (under
// qemu-user, arm64 on an x86_64 host).
var cTargets = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// TestLayoutMatchesC compiles the module's uapi header for the test binary's
// own architecture and compares every struct size, field offset and field
// size, and the constants and ioctl numbers, with the Go mirrors. It needs
// clang (any target, no linker: the values are read from the object file)
// and that architecture's C headers.
func TestLayoutMatchesC(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("layout is checked on 64-bit hosts")
	}
	clang := testenv.NeedTool(t, "clang", "clang")
	target, ok := cTargets[runtime.GOARCH]
	if !ok {
		t.Skipf("no C target known for GOARCH %s", runtime.GOARCH)
	}
	includes, err := cHeaders(target)
	if err != nil {
		testenv.Require(t, "%v", err)
	}

	// One array holds every value, in the order of keys.
	var keys []string
	var prog strings.Builder
	prog.WriteString("#include <stddef.h>\n#include \"taichi_uapi.h\"\nconst unsigned long long taichi_layout[] = {\n")
	add := func(key, expr string) {
		keys = append(keys, key)
		fmt.Fprintf(&prog, "\t(unsigned long long)(%s),\n", expr)
	}
	for _, s := range cStructs {
		add(s.name+" sizeof", fmt.Sprintf("sizeof(struct %s)", s.name))
		for _, f := range s.fields {
			add(s.name+"."+f+" offset", fmt.Sprintf("offsetof(struct %s, %s)", s.name, f))
			add(s.name+"."+f+" size", fmt.Sprintf("sizeof(((struct %s *)0)->%s)", s.name, f))
		}
	}
	for name := range cConstants {
		add(name+" value", name)
	}
	prog.WriteString("};\n")

	dir := t.TempDir()
	src := filepath.Join(dir, "layout.c")
	obj := filepath.Join(dir, "layout.o")
	if err := os.WriteFile(src, []byte(prog.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs("../../module")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--target=" + target, "-Wall", "-Werror", "-c", "-I", abs}, includes...)
	if out, err := exec.Command(clang, append(args, "-o", obj, src)...).CombinedOutput(); err != nil {
		t.Fatalf("clang %s: %v\n%s", target, err, out)
	}
	values, err := readLayout(obj, runtime.GOARCH, len(keys))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for i, k := range keys {
		got[k] = values[i]
	}

	for _, s := range cStructs {
		if s.goType.NumField() != len(s.fields) {
			t.Errorf("%s: Go %s has %d fields, C list has %d", s.name, s.goType, s.goType.NumField(), len(s.fields))
			continue
		}
		if c, g := got[s.name+" sizeof"], uint64(s.goType.Size()); c != g {
			t.Errorf("sizeof(struct %s) = %d, Go %s = %d", s.name, c, s.goType, g)
		}
		for i, cf := range s.fields {
			gf := s.goType.Field(i)
			key := s.name + "." + cf
			if c := got[key+" offset"]; c != uint64(gf.Offset) {
				t.Errorf("offsetof(%s) = %d, Go %s.%s at %d", key, c, s.goType, gf.Name, gf.Offset)
			}
			if c := got[key+" size"]; c != uint64(gf.Type.Size()) {
				t.Errorf("sizeof(%s) = %d, Go %s.%s is %d", key, c, s.goType, gf.Name, gf.Type.Size())
			}
		}
	}
	for name, want := range cConstants {
		if c := got[name+" value"]; c != want {
			t.Errorf("%s = %#x in C, %#x in Go", name, c, want)
		}
	}
}

// cHeaders returns the clang flags that find target's C library headers:
// none when they are the host's own (Debian multiarch), else Debian's
// cross-compilation headers (libc6-dev-arm64-cross) in /usr/<target>/include.
func cHeaders(target string) ([]string, error) {
	if _, err := os.Stat(filepath.Join("/usr/include", target, "sys/ioctl.h")); err == nil {
		return nil, nil
	}
	cross := filepath.Join("/usr", target, "include")
	if _, err := os.Stat(filepath.Join(cross, "sys/ioctl.h")); err == nil {
		return []string{"-nostdlibinc", "-isystem", cross}, nil
	}
	return nil, fmt.Errorf("no C headers for %s (Debian: libc6-dev-%s-cross)", target, runtime.GOARCH)
}

// elfMachines is the ELF machine clang's object must have for each GOARCH.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// readLayout reads the n values of taichi_layout from the compiled object.
func readLayout(path, goarch string, n int) ([]uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.Machine != elfMachines[goarch] {
		return nil, fmt.Errorf("%s: object for %v, want %v", path, f.Machine, elfMachines[goarch])
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, err
	}
	for _, sym := range syms {
		if sym.Name != "taichi_layout" {
			continue
		}
		if sym.Size != uint64(8*n) || int(sym.Section) >= len(f.Sections) {
			return nil, fmt.Errorf("taichi_layout: %d bytes in section %d, want %d values", sym.Size, sym.Section, n)
		}
		data, err := f.Sections[sym.Section].Data()
		if err != nil {
			return nil, err
		}
		if sym.Value+sym.Size > uint64(len(data)) {
			return nil, fmt.Errorf("taichi_layout: past the end of its section")
		}
		values := make([]uint64, n)
		for i := range values {
			values[i] = f.ByteOrder.Uint64(data[sym.Value+uint64(8*i):])
		}
		return values, nil
	}
	return nil, fmt.Errorf("%s: no taichi_layout symbol", path)
}
