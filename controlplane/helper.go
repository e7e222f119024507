package controlplane

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// HelperMain is the Go helper of the VM-startup pipeline (`taichi cp-helper`):
//
//	config PATH        write the config JSON from stdin to PATH, fsync, read it back, compare
//	spin UNITS         CPU work in proportion to UNITS (hash chains)
//	mmap MB LOOPS      LOOPS times: map MB MiB populated, touch, unmap (kernel-heavy)
//
// It returns the process exit code.
func HelperMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if err := helper(args, stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "cp-helper:", err)
		return 1
	}
	return 0
}

func helper(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: cp-helper config PATH | spin UNITS | mmap MB LOOPS")
	}
	switch args[0] {
	case "config":
		if len(args) != 2 {
			return errors.New("usage: cp-helper config PATH")
		}
		return writeConfig(args[1], stdin)
	case "spin":
		if len(args) != 2 {
			return errors.New("usage: cp-helper spin UNITS")
		}
		units, err := strconv.Atoi(args[1])
		if err != nil || units < 1 {
			return fmt.Errorf("spin: UNITS %q: want a positive integer", args[1])
		}
		sum := sha256.Sum256([]byte(args[1]))
		for range units * 150000 {
			sum = sha256.Sum256(sum[:])
		}
		_, err = fmt.Fprintln(stdout, hex.EncodeToString(sum[:8]))
		return err
	case "mmap":
		if len(args) != 3 {
			return errors.New("usage: cp-helper mmap MB LOOPS")
		}
		mb, err1 := strconv.Atoi(args[1])
		loops, err2 := strconv.Atoi(args[2])
		if err1 != nil || err2 != nil || mb < 1 || loops < 1 {
			return fmt.Errorf("mmap: MB %q LOOPS %q: want positive integers", args[1], args[2])
		}
		return mmapStorm(mb, loops)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func writeConfig(path string, stdin io.Reader) error {
	want, err := io.ReadAll(stdin)
	if err != nil {
		return err
	}
	var cfg VMConfig
	dec := json.NewDecoder(bytes.NewReader(want))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("config: stdin: %w", err)
	}
	if cfg.NetNS == "" {
		return errors.New("config: netns: empty")
	}
	pretty, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".vm-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(pretty, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	back, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var got VMConfig
	if err := json.Unmarshal(back, &got); err != nil {
		return fmt.Errorf("config: read back %s: %w", path, err)
	}
	if got != cfg {
		return fmt.Errorf("config: read back %s: differs from what was written", path)
	}
	return nil
}

func mmapStorm(mb, loops int) error {
	size := mb << 20
	page := os.Getpagesize()
	for range loops {
		b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("mmap %d MiB: %w", mb, err)
		}
		for i := 0; i < size; i += page {
			b[i] = byte(i)
		}
		if err := unix.Munmap(b); err != nil {
			return fmt.Errorf("munmap: %w", err)
		}
	}
	return nil
}
