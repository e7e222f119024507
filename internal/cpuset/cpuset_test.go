package cpuset

import (
	"slices"
	"testing"
)

func TestParseFormat(t *testing.T) {
	cases := []struct {
		in   string
		want []int
		fmt  string
	}{
		{"", nil, ""},
		{"0", []int{0}, "0"},
		{"0-2,5", []int{0, 1, 2, 5}, "0-2,5"},
		{" 5,0-1, 1 ", []int{0, 1, 5}, "0-1,5"},
		{"3,2,1", []int{1, 2, 3}, "1-3"},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.in, err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("Parse(%q) = %v, want %v", c.in, got, c.want)
		}
		if f := Format(got); f != c.fmt {
			t.Errorf("Format(%v) = %q, want %q", got, f, c.fmt)
		}
	}
	for _, bad := range []string{"a", "1-", "-1", "3-1", "1,,2", "99999"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): want error", bad)
		}
	}
}
