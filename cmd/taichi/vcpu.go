package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"text/tabwriter"

	"github.com/prometheus/procfs"
	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/vcpu"
)

func init() {
	rootCmd.AddCommand(newVCPUCmd())
}

func newVCPUCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vcpu",
		Short: "The vCPU pool's helpers: try CP selectors, remove a leftover pool group",
	}

	var units, cgroups, commands []string
	var pids []int
	var asJSON bool
	scan := &cobra.Command{
		Use:   "scan",
		Short: "List the processes CP selectors match (what `taichi run` would adopt)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			sel := vcpu.Selector{Units: units, Cgroups: cgroups, PIDs: pids}
			for i, expr := range commands {
				re, err := regexp.Compile(expr)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("command[%d]: %w", i, err)}
				}
				sel.Commands = append(sel.Commands, re)
			}
			if err := sel.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			found, err := vcpu.Scan(sel)
			if err != nil {
				return err
			}
			type proc struct {
				PID   int    `json:"pid"`
				Comm  string `json:"comm"`
				Argv0 string `json:"argv0"`
			}
			out := []proc{}
			for _, pid := range found {
				p := proc{PID: pid}
				if pr, err := procfs.NewProc(pid); err == nil {
					p.Comm, _ = pr.Comm()
					if argv, err := pr.CmdLine(); err == nil && len(argv) > 0 {
						p.Argv0 = filepath.Base(argv[0])
					}
				}
				out = append(out, p)
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PID\tCOMM\tARGV0")
			for _, p := range out {
				fmt.Fprintf(tw, "%d\t%s\t%s\n", p.PID, p.Comm, p.Argv0)
			}
			return tw.Flush()
		},
	}
	scan.Flags().StringArrayVar(&units, "unit", nil, "systemd unit or slice name (repeatable)")
	scan.Flags().StringArrayVar(&cgroups, "cgroup", nil, "absolute cgroup path; matches it and below (repeatable)")
	scan.Flags().StringArrayVar(&commands, "command", nil, "regexp on comm or argv[0]'s base name (repeatable)")
	scan.Flags().IntSliceVar(&pids, "pid", nil, "process id (repeatable)")
	scan.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var name string
	destroy := &cobra.Command{
		Use:   "destroy",
		Short: "Move a pool group's tasks back to the parent group and remove the group (teardown after a run)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			err := vcpu.DestroyGroup(name, nil)
			if errors.Is(err, vcpu.ErrNotSupported) {
				return &exitError{code: 2, err: err}
			}
			if err == nil {
				fmt.Fprintf(c.OutOrStdout(), "removed pool group %q (if it existed)\n", name)
			}
			return err
		},
	}
	destroy.Flags().StringVar(&name, "name", vcpu.DefaultName, "the pool group's name")

	cmd.AddCommand(scan, destroy)
	return cmd
}
