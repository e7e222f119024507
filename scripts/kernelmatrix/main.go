// Command kernelmatrix runs taichi's kernel-facing tests inside qemu guests
// booting Debian's kernels (scripts/kernel-matrix.sh builds the guests) and
// judges the runs.
//
//	kernelmatrix guest [-step-timeout D]   the guest's init (after busybox):
//	    mount proc, sys, bpffs, tracefs, cgroup2 and the v1 cpu and cpuset
//	    hierarchies, run the plan's test binaries from /tests and the module
//	    script, print a KM-TEST line per test, a KM-STEP line per step and a
//	    KM-VERDICT line, and power off
//	kernelmatrix report [-md FILE] [-json FILE] NAME=DIR...
//	    read each guest's DIR/console.txt and its kernel's DIR/config, write
//	    the matrix (kernel x feature) as Markdown and JSON, print it, and
//	    exit 1 when a guest failed a test, did not finish, or skipped a test
//	    its kernel should support (a skip its config explains is recorded as
//	    the kernel's limit)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "guest":
		fs := flag.NewFlagSet("guest", flag.ExitOnError)
		timeout := fs.Duration("step-timeout", 4*time.Minute, "limit for one step's test binary")
		_ = fs.Parse(os.Args[2:])
		runGuest(*timeout)
	case "report":
		os.Exit(report(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kernelmatrix guest [-step-timeout D] | report [-md FILE] [-json FILE] NAME=DIR...")
	os.Exit(2)
}

func report(args []string) int {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	md := fs.String("md", "", "write the Markdown table here")
	js := fs.String("json", "", "write every guest's results here")
	_ = fs.Parse(args)
	if fs.NArg() == 0 {
		usage()
	}
	var runs []*guestRun
	for _, arg := range fs.Args() {
		name, dir, ok := strings.Cut(arg, "=")
		if !ok || name == "" || dir == "" {
			fmt.Fprintf(os.Stderr, "kernelmatrix: %q: want NAME=DIR\n", arg)
			return 2
		}
		g, err := loadRun(name, dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kernelmatrix:", err)
			return 1
		}
		runs = append(runs, g)
	}
	var table strings.Builder
	writeTable(&table, runs)
	fmt.Print(table.String())
	if *md != "" {
		if err := os.WriteFile(*md, []byte(table.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "kernelmatrix:", err)
			return 1
		}
	}
	if *js != "" {
		b, _ := json.MarshalIndent(runs, "", "  ")
		if err := os.WriteFile(*js, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "kernelmatrix:", err)
			return 1
		}
	}
	rc := 0
	for _, g := range runs {
		for _, p := range g.problems() {
			fmt.Printf("kernel-matrix: %s: %s\n", g.Name, p)
			rc = 1
		}
	}
	return rc
}

// loadRun reads DIR/console.txt (the guest's console) and DIR/config (its
// kernel's build config).
func loadRun(name, dir string) (*guestRun, error) {
	console, err := os.Open(filepath.Join(dir, "console.txt"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer console.Close()
	cfg, err := os.Open(filepath.Join(dir, "config"))
	if err != nil {
		return nil, fmt.Errorf("%s: kernel config: %w", name, err)
	}
	defer cfg.Close()
	g := parseConsole(name, console)
	g.config = parseConfig(cfg)
	return g, nil
}
