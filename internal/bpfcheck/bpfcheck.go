// Package bpfcheck checks a committed BPF object (bpf2go output) without a
// kernel, so it runs natively and in the arm64 pass under qemu-user alike.
//
// A bpf2go loader embeds the object its build tags pick for GOARCH: the
// bpfel object serves every little-endian architecture (amd64 and arm64
// alike), an object built with -target amd64,arm64 has one variant per
// architecture. Calling the loader from a test binary built for arm64
// therefore checks the arm64 variant. One line per object:
//
//	bpfcheck.Object(t, "probe", loadProbe, &probeSpecs{})
package bpfcheck

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Object loads an object through its generated loader (load, e.g. loadProbe)
// and checks what ebpf.LoadCollectionSpec parses from it: the ELF sections
// and relocations, its BTF and the per-function BTF info, the byte order of
// the architecture under test, and that every program, map and variable the
// generated bindings name (specs, e.g. &probeSpecs{}) is in the object.
// Nothing is loaded into the kernel.
func Object(t *testing.T, name string, load func() (*ebpf.CollectionSpec, error), specs any) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		spec, err := load()
		if err != nil {
			t.Fatalf("parsing the embedded object: %v", err)
		}
		probe := []byte{1, 0}
		if spec.ByteOrder == nil || spec.ByteOrder.Uint16(probe) != binary.NativeEndian.Uint16(probe) {
			t.Fatalf("object byte order %v differs from this architecture's", spec.ByteOrder)
		}
		if spec.Types == nil {
			t.Fatal("object has no BTF")
		}
		if len(spec.Programs) == 0 {
			t.Fatal("object has no programs")
		}
		for pname, p := range spec.Programs {
			if p.Type == ebpf.UnspecifiedProgram {
				t.Errorf("program %s: no program type (section %q)", pname, p.SectionName)
			}
			if len(p.Instructions) == 0 {
				t.Errorf("program %s: no instructions", pname)
				continue
			}
			if fn := btf.FuncMetadata(&p.Instructions[0]); fn == nil || fn.Name != p.Name {
				t.Errorf("program %s: BTF func info %v, want one naming the program", pname, fn)
			}
		}
		if err := spec.Assign(specs); err != nil {
			t.Errorf("the generated bindings do not match the object: %v", err)
		}
		t.Logf("%d programs, %d maps, %d variables", len(spec.Programs), len(spec.Maps), len(spec.Variables))
	})
}
