package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/topology"
)

// sysfsRoot lets tests and containers point topology at another sysfs tree.
var sysfsRoot = topology.DefaultSysfs

func init() {
	rootCmd.PersistentFlags().StringVar(&sysfsRoot, "sysfs", topology.DefaultSysfs, "sysfs mount to read the CPU topology from")
	_ = rootCmd.PersistentFlags().MarkHidden("sysfs")

	configCmd := &cobra.Command{Use: "config", Short: "Print or check configuration"}
	configCmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the embedded default configuration (YAML, commented)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.DefaultYAML())
			return err
		},
	})
	configCmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file: exit 0, or exit 2 with one \"key: problem\" line per error",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := loadConfig(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	})
	rootCmd.AddCommand(configCmd)
}

// loadConfig loads path (empty: embedded defaults) against this machine's
// topology. Invalid configurations print one "key: problem" line each to
// stderr and come back as exit code 2.
func loadConfig(path string) (*config.Config, error) {
	topo, err := topology.Read(sysfsRoot)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(path, topo)
	if es, ok := config.AsErrors(err); ok {
		for _, e := range es {
			fmt.Fprintln(os.Stderr, e.Error())
		}
		return nil, &exitError{code: 2, err: fmt.Errorf("invalid configuration (%d problem(s))", len(es))}
	}
	return cfg, err
}
