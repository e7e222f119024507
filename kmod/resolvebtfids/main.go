// Command resolvebtfids fills the .BTF_ids section of a kernel module with
// the BTF IDs of the types and functions it names (BTF_ID, BTF_SET8), as the
// kernel tree's tools/bpf/resolve_btfids does during a full kernel build.
// Debian's linux-headers package ships neither that tool nor vmlinux, and a
// module's kfunc set is useless without resolved IDs, so the kmod qemu test
// runs pahole (dwarves) for the module BTF and then this.
//
//	resolvebtfids -vmlinux VMLINUX MODULE.ko
package main

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cilium/ebpf/btf"
)

func main() {
	vmlinux := flag.String("vmlinux", "", "ELF vmlinux with a .BTF section (the module's base BTF)")
	flag.Parse()
	if *vmlinux == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: resolvebtfids -vmlinux VMLINUX MODULE.ko")
		os.Exit(2)
	}
	n, err := resolve(*vmlinux, flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "resolvebtfids:", err)
		os.Exit(1)
	}
	fmt.Printf("resolvebtfids: %s: %d IDs resolved\n", flag.Arg(0), n)
}

func resolve(vmlinux, module string) (int, error) {
	f, err := elf.Open(module)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	btfSec, idsSec := f.Section(".BTF"), f.Section(".BTF_ids")
	if btfSec == nil {
		return 0, fmt.Errorf("%s has no .BTF section (run pahole -J --btf_base first)", module)
	}
	if idsSec == nil {
		return 0, nil // nothing to resolve
	}
	raw, err := btfSec.Data()
	if err != nil {
		return 0, err
	}
	ids, err := idsSec.Data()
	if err != nil {
		return 0, err
	}
	base, err := loadBase(vmlinux)
	if err != nil {
		return 0, fmt.Errorf("base BTF from %s: %w", vmlinux, err)
	}
	spec, err := btf.LoadSplitSpecFromReader(bytes.NewReader(raw), base)
	if err != nil {
		return 0, fmt.Errorf("module BTF: %w", err)
	}
	syms, err := f.Symbols()
	if err != nil {
		return 0, err
	}
	idsIndex := elf.SectionIndex(-1)
	for i, s := range f.Sections {
		if s == idsSec {
			idsIndex = elf.SectionIndex(i)
		}
	}

	type set struct {
		off, cnt uint64
		pair     bool // set8: {id, flags} pairs after an 8-byte header
	}
	var sets []set
	resolved := 0
	for _, s := range syms {
		if s.Section != idsIndex || !strings.HasPrefix(s.Name, "__BTF_ID__") {
			continue
		}
		kind, name := parseSymbol(s.Name)
		switch kind {
		case "set8":
			sets = append(sets, set{off: s.Value, cnt: s.Size/8 - 1, pair: true})
			continue
		case "set":
			sets = append(sets, set{off: s.Value, cnt: s.Size/4 - 1})
			continue
		}
		id, err := lookup(spec, kind, name)
		if err != nil {
			return 0, err
		}
		if s.Value+4 > uint64(len(ids)) {
			return 0, fmt.Errorf("symbol %s outside .BTF_ids", s.Name)
		}
		binary.LittleEndian.PutUint32(ids[s.Value:], uint32(id))
		resolved++
	}
	for _, st := range sets {
		if st.pair {
			binary.LittleEndian.PutUint32(ids[st.off:], uint32(st.cnt))
			sortPairs(ids[st.off+8 : st.off+8+st.cnt*8])
		} else {
			binary.LittleEndian.PutUint32(ids[st.off:], uint32(st.cnt))
			sortIDs(ids[st.off+4 : st.off+4+st.cnt*4])
		}
	}
	if f.ByteOrder != binary.LittleEndian {
		return 0, errors.New("only little-endian modules are supported")
	}
	out, err := os.OpenFile(module, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	if _, err := out.WriteAt(ids, int64(idsSec.Offset)); err != nil {
		out.Close()
		return 0, err
	}
	return resolved, out.Close()
}

// loadBase reads raw BTF from vmlinux's .BTF section (a vmlinux extracted
// from a bzImage has no symbol table, which btf.LoadSpec would want), or
// takes the file as raw BTF (e.g. a copy of /sys/kernel/btf/vmlinux).
func loadBase(path string) (*btf.Spec, error) {
	f, err := elf.Open(path)
	if err != nil {
		raw, rerr := os.ReadFile(path)
		if rerr != nil {
			return nil, rerr
		}
		return btf.LoadSpecFromReader(bytes.NewReader(raw))
	}
	defer f.Close()
	sec := f.Section(".BTF")
	if sec == nil {
		return nil, errors.New("no .BTF section")
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, err
	}
	return btf.LoadSpecFromReader(bytes.NewReader(raw))
}

// parseSymbol splits "__BTF_ID__<kind>__<name>[__<counter>]": BTF_ID adds
// a unique counter, set and set8 symbols carry the set's bare name.
func parseSymbol(sym string) (kind, name string) {
	kind, name, _ = strings.Cut(strings.TrimPrefix(sym, "__BTF_ID__"), "__")
	if kind == "set" || kind == "set8" {
		return kind, name
	}
	if i := strings.LastIndex(name, "__"); i > 0 {
		name = name[:i]
	}
	return kind, name
}

func lookup(spec *btf.Spec, kind, name string) (btf.TypeID, error) {
	types, err := spec.AnyTypesByName(name)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	for _, t := range types {
		ok := false
		switch kind {
		case "func":
			_, ok = t.(*btf.Func)
		case "struct":
			_, ok = t.(*btf.Struct)
		case "union":
			_, ok = t.(*btf.Union)
		case "typedef":
			_, ok = t.(*btf.Typedef)
		}
		if ok {
			return spec.TypeID(t)
		}
	}
	return 0, fmt.Errorf("no BTF %s named %s", kind, name)
}

func sortPairs(b []byte) {
	n := len(b) / 8
	pairs := make([][2]uint32, n)
	for i := range pairs {
		pairs[i] = [2]uint32{binary.LittleEndian.Uint32(b[i*8:]), binary.LittleEndian.Uint32(b[i*8+4:])}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	for i, p := range pairs {
		binary.LittleEndian.PutUint32(b[i*8:], p[0])
		binary.LittleEndian.PutUint32(b[i*8+4:], p[1])
	}
}

func sortIDs(b []byte) {
	n := len(b) / 4
	v := make([]uint32, n)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[i*4:], x)
	}
}
