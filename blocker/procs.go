package blocker

import (
	"fmt"
	"os"
	"strings"
)

// MembersByCommand finds, among the processes members returns (the CP
// pool's), those whose command name (/proc/PID/comm) is comm. Processes
// that exit meanwhile are skipped.
type MembersByCommand func() ([]int, error)

// ByCommand implements Processes.
func (members MembersByCommand) ByCommand(comm string) ([]int, error) {
	pids, err := members()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue // exited
		}
		if strings.TrimSuffix(string(b), "\n") == comm {
			out = append(out, pid)
		}
	}
	return out, nil
}
