package vcpu

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxCPUID bounds CPU ids accepted by ParseCPUList so that a typo such as
// "0-4000000000" is an error instead of a huge allocation.
const maxCPUID = 1 << 16

// ParseCPUList parses the kernel's CPU list format ("0-2,5", "" or "\n" for
// none) as used by cpuset.cpus, /sys/devices/system/cpu/online and
// Cpus_allowed_list. The result is sorted and free of duplicates.
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := parseCPUID(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: %w", s, err)
		}
		last := first
		if isRange {
			if last, err = parseCPUID(hi); err != nil {
				return nil, fmt.Errorf("cpu list %q: %w", s, err)
			}
			if last < first {
				return nil, fmt.Errorf("cpu list %q: range %q is backwards", s, part)
			}
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

func parseCPUID(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > maxCPUID {
		return 0, fmt.Errorf("bad CPU id %q", s)
	}
	return n, nil
}

// FormatCPUList renders CPU ids in the kernel's list format, collapsing
// consecutive ids into ranges: [0 1 2 5] -> "0-2,5". Order and duplicates in
// the input do not matter; an empty input gives "".
func FormatCPUList(cpus []int) string {
	sorted := slices.Compact(slices.Sorted(slices.Values(cpus)))
	var b strings.Builder
	for i := 0; i < len(sorted); {
		j := i
		for j+1 < len(sorted) && sorted[j+1] == sorted[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(sorted[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(sorted[j]))
		}
		i = j + 1
	}
	return b.String()
}
