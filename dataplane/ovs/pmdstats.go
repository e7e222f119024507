package ovs

import (
	"fmt"
	"strconv"
	"strings"
)

// PMDStats is one PMD thread's block of dpif-netdev/pmd-stats-show. The
// counters are cumulative since the thread started or the last
// pmd-stats-clear.
type PMDStats struct {
	NUMA, CoreID int

	PacketsReceived      uint64 // "packets received"
	PacketRecirculations uint64
	PHWOLHits            uint64 // hardware offload
	MFEXOptHits          uint64 // optimised miniflow extract
	SimpleMatchHits      uint64
	EMCHits              uint64 // exact match cache
	SMCHits              uint64 // signature match cache
	MegaflowHits         uint64
	UpcallsOK            uint64 // "miss with success upcall"
	UpcallsFailed        uint64 // "miss with failed upcall"
	// IdleCycles and BusyCycles are TSC cycles spent polling without and
	// with packets ("idle cycles", "processing cycles").
	IdleCycles, BusyCycles uint64
}

// pmdHeader is how a PMD thread's block starts; "main thread:" starts the
// non-PMD block, whose lines are skipped.
const pmdHeader = "pmd thread numa_id %d core_id %d:"

// counters maps a line's key to the field it fills.
func (s *PMDStats) counters() map[string]*uint64 {
	return map[string]*uint64{
		"packets received":         &s.PacketsReceived,
		"packet recirculations":    &s.PacketRecirculations,
		"phwol hits":               &s.PHWOLHits,
		"mfex opt hits":            &s.MFEXOptHits,
		"simple match hits":        &s.SimpleMatchHits,
		"emc hits":                 &s.EMCHits,
		"smc hits":                 &s.SMCHits,
		"megaflow hits":            &s.MegaflowHits,
		"miss with success upcall": &s.UpcallsOK,
		"miss with failed upcall":  &s.UpcallsFailed,
		"idle cycles":              &s.IdleCycles,
		"processing cycles":        &s.BusyCycles,
	}
}

// ParsePMDStats parses the output of dpif-netdev/pmd-stats-show. Lines it
// does not know (averages, other OVS versions' counters) are ignored; a
// known counter whose value is not a number is an error naming the line.
func ParsePMDStats(out string) ([]PMDStats, error) {
	var stats []PMDStats
	var cur *PMDStats
	var fields map[string]*uint64
	for n, line := range strings.Split(out, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			continue
		}
		if !strings.HasPrefix(line, " ") { // a block header
			cur, fields = nil, nil
			if strings.HasPrefix(trimmed, "pmd thread ") {
				var s PMDStats
				if _, err := fmt.Sscanf(trimmed, pmdHeader, &s.NUMA, &s.CoreID); err != nil {
					return nil, fmt.Errorf("ovs: pmd-stats-show line %d %q: %w", n+1, trimmed, err)
				}
				stats = append(stats, s)
				cur = &stats[len(stats)-1]
				fields = cur.counters()
			}
			continue
		}
		if cur == nil {
			continue
		}
		key, value, ok := strings.Cut(trimmed, ":")
		if !ok {
			continue
		}
		dst, known := fields[key]
		if !known {
			continue
		}
		// "idle cycles: 1499966 (96.38%)": the count comes first.
		num, _, _ := strings.Cut(strings.TrimSpace(value), " ")
		v, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("ovs: pmd-stats-show line %d %q: %s: %w", n+1, trimmed, key, err)
		}
		*dst = v
	}
	return stats, nil
}
