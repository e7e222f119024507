package uapi

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"
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

// TestLayoutMatchesC compiles a C program against the module's uapi header
// and compares every struct size, field offset and field size, and the
// constants and ioctl numbers, with the Go mirrors. It needs gcc only.
func TestLayoutMatchesC(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("layout is checked on 64-bit hosts")
	}
	var prog strings.Builder
	prog.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include \"taichi_uapi.h\"\nint main(void) {\n")
	for _, s := range cStructs {
		fmt.Fprintf(&prog, "printf(\"%s sizeof %%zu\\n\", sizeof(struct %s));\n", s.name, s.name)
		for _, f := range s.fields {
			fmt.Fprintf(&prog, "printf(\"%s.%s offset %%zu\\n\", offsetof(struct %s, %s));\n", s.name, f, s.name, f)
			fmt.Fprintf(&prog, "printf(\"%s.%s size %%zu\\n\", sizeof(((struct %s *)0)->%s));\n", s.name, f, s.name, f)
		}
	}
	for name := range cConstants {
		fmt.Fprintf(&prog, "printf(\"%s value %%llu\\n\", (unsigned long long)(%s));\n", name, name)
	}
	prog.WriteString("return 0;\n}\n")

	dir := t.TempDir()
	src := filepath.Join(dir, "layout.c")
	bin := filepath.Join(dir, "layout")
	if err := os.WriteFile(src, []byte(prog.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs("../../module")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-Wall", "-Werror", "-I", abs, "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running layout program: %v", err)
	}
	got := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			t.Fatalf("bad line %q", sc.Text())
		}
		v, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		got[f[0]+" "+f[1]] = v
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
