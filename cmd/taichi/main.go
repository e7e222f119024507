// Command taichi co-schedules control-plane and data-plane work on the cores
// of a SmartNIC/DPU or any Linux host with dedicated packet cores.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/taichi-sched/taichi/internal/cpushare"
)

// exitError carries a process exit code through cobra (e.g. 2 for an invalid config).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// rootCmd is the `taichi` command; each file in this package adds its
// subcommands to it from an init function, so features stay in their own files.
var rootCmd = &cobra.Command{
	Use:           "taichi",
	Short:         "Lend idle data-plane cores to control-plane work without hurting packets",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	cpushare.RunHogIfRequested() // eval's CP hog is this binary run again
	if err := rootCmd.Execute(); err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if err.Error() != "" {
			fmt.Fprintln(os.Stderr, "taichi:", err)
		}
		os.Exit(code)
	}
}
