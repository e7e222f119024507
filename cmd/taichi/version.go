package main

import "github.com/taichi-sched/taichi/daemon"

// `taichi --version` prints the version the daemon reports in status and
// taichi_build_info (set by the linker in packaged builds).
func init() {
	rootCmd.Version = daemon.BuildVersion()
}
