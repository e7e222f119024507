package main

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	"github.com/taichi-sched/taichi/testbed"
)

func init() {
	var prefix string
	cmd := &cobra.Command{
		Use:   "testbed",
		Short: "Create or remove the network namespaces and veth pairs used by demo, eval and tests",
	}
	cmd.PersistentFlags().StringVar(&prefix, "prefix", "taichi", "name prefix of the namespaces (<prefix>-gen, -nic, -dp, -sink)")

	up := &cobra.Command{
		Use:   "up",
		Short: "Create the testbed (idempotent: reuses what exists) and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tb, err := testbed.Up(cmd.Context(), testbed.Options{Prefix: prefix})
			if err != nil {
				return err
			}
			printTestbed(cmd, tb)
			return nil
		},
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Remove the testbed's namespaces and everything in them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tb, err := testbed.Layout(testbed.Options{Prefix: prefix})
			if err != nil {
				return err
			}
			if err := tb.Down(); err != nil {
				return err
			}
			printState(cmd, tb)
			return nil
		},
	}
	cmd.AddCommand(up, down)
	rootCmd.AddCommand(cmd)
}

func printTestbed(cmd *cobra.Command, tb *testbed.Testbed) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "generator  netns %-16s iface %-8s ip %s mac %s\n", tb.GenNS, tb.GenIface, tb.GenIP, tb.GenMAC)
	fmt.Fprintf(w, "nic        netns %-16s in %s (probe) -> bridge %s -> out %s\n", tb.NICNS, tb.NICIn, tb.NICBridge, tb.NICOut)
	fmt.Fprintf(w, "dataplane  netns %-16s iface %-8s ip %s mac %s (owned by the DP loop)\n", tb.DPNS, tb.DPIface, tb.DPIP, tb.DPMAC)
	fmt.Fprintf(w, "           forward out %s mac %s\n", tb.DPOutIface, tb.DPOutMAC)
	fmt.Fprintf(w, "sink       netns %-16s iface %-8s ip %s mac %s\n", tb.SinkNS, tb.SinkIface, tb.SinkIP, tb.SinkMAC)
	printState(cmd, tb)
}

func printState(cmd *cobra.Command, tb *testbed.Testbed) {
	st := tb.State(cmd.Context())
	keys := make([]string, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		state := "absent"
		if st[k] {
			state = "present"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "  %-32s %s\n", k, state)
	}
}
