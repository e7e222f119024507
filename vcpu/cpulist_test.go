package vcpu

import (
	"slices"
	"testing"

	"github.com/taichi-sched/taichi/internal/cpuset"
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
		got, err := cpuset.Parse(c.in)
		if err != nil {
			t.Errorf("cpuset.Parse(%q): %v", c.in, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("cpuset.Parse(%q) = %v, want %v", c.in, got, c.want)
		}
	}
	for _, bad := range []string{"a", "1-", "-1", "3-1", "1,,2", "0-99999999", "1.5"} {
		if got, err := cpuset.Parse(bad); err == nil {
			t.Errorf("cpuset.Parse(%q) = %v, want an error", bad, got)
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
		if got := cpuset.Format(c.in); got != c.want {
			t.Errorf("cpuset.Format(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzCPUListRoundTrip(f *testing.F) {
	for _, s := range []string{"0-2,5", "1", "", "3,1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := cpuset.Parse(s)
		if err != nil {
			return
		}
		back, err := cpuset.Parse(cpuset.Format(cpus))
		if err != nil || !slices.Equal(back, cpus) {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, cpus, cpuset.Format(cpus), back, err)
		}
	})
}
