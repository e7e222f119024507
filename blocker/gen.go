package blocker

// The tracer is compiled with Debian bookworm's clang 14.0.6, once per
// architecture (the kernel-mode test reads arch-specific registers); another
// clang version may produce different objects (mk/blocker.mk checks for a diff).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -cc clang -target amd64,arm64 -type event -type dp_thread -type cpu_pending -type settings -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" tracer bpf/tracer.c
