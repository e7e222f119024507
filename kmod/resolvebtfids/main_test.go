package main

import (
	"encoding/binary"
	"testing"
)

func TestParseSymbol(t *testing.T) {
	for _, c := range []struct{ sym, kind, name string }{
		{"__BTF_ID__func__taichi_kick_cpu__412", "func", "taichi_kick_cpu"},
		{"__BTF_ID__struct__task_struct__7", "struct", "task_struct"},
		{"__BTF_ID__func__name__with__underscores__3", "func", "name__with__underscores"},
		{"__BTF_ID__set8__taichi_kfunc_ids", "set8", "taichi_kfunc_ids"},
		{"__BTF_ID__set__some__set", "set", "some__set"},
	} {
		kind, name := parseSymbol(c.sym)
		if kind != c.kind || name != c.name {
			t.Errorf("parseSymbol(%q) = %q, %q; want %q, %q", c.sym, kind, name, c.kind, c.name)
		}
	}
}

func TestSortPairsKeepsFlagsWithTheirIDs(t *testing.T) {
	b := make([]byte, 24)
	for i, p := range [][2]uint32{{30, 3}, {10, 1}, {20, 2}} {
		binary.LittleEndian.PutUint32(b[i*8:], p[0])
		binary.LittleEndian.PutUint32(b[i*8+4:], p[1])
	}
	sortPairs(b)
	for i, want := range [][2]uint32{{10, 1}, {20, 2}, {30, 3}} {
		got := [2]uint32{binary.LittleEndian.Uint32(b[i*8:]), binary.LittleEndian.Uint32(b[i*8+4:])}
		if got != want {
			t.Errorf("pair %d = %v, want %v", i, got, want)
		}
	}
}
