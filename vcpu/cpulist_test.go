package vcpu

import (
	"slices"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	cases := []struct {
		in   string
		want []int
	}{
		{"", nil},
		{"\n", nil},
		{"0", []int{0}},
		{"0-2,5", []int{0, 1, 2, 5}},
		{"5,0-2", []int{0, 1, 2, 5}},
		{"1,1,0-1", []int{0, 1}},
		{" 3-4 \n", []int{3, 4}},
	}
	for _, c := range cases {
		got, err := ParseCPUList(c.in)
		if err != nil {
			t.Errorf("ParseCPUList(%q): %v", c.in, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("ParseCPUList(%q) = %v, want %v", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"a", "1-", "-1", "3-1", "1,,2", "0-99999999", "1.5"} {
		if got, err := ParseCPUList(bad); err == nil {
			t.Errorf("ParseCPUList(%q) = %v, want an error", bad, got)
		}
	}
}

func TestFormatCPUList(t *testing.T) {
	cases := []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{0}, "0"},
		{[]int{0, 1, 2, 5}, "0-2,5"},
		{[]int{5, 2, 0, 1, 1}, "0-2,5"},
		{[]int{1, 3, 5}, "1,3,5"},
		{[]int{7, 8, 10, 11, 12}, "7-8,10-12"},
	}
	for _, c := range cases {
		if got := FormatCPUList(c.in); got != c.want {
			t.Errorf("FormatCPUList(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzCPUListRoundTrip(f *testing.F) {
	for _, s := range []string{"0-2,5", "1", "", "3,1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := ParseCPUList(s)
		if err != nil {
			return
		}
		back, err := ParseCPUList(FormatCPUList(cpus))
		if err != nil || !slices.Equal(back, cpus) {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, cpus, FormatCPUList(cpus), back, err)
		}
	})
}
