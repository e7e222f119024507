package probe

// The XDP program is compiled with Debian bookworm's clang 14.0.6; another
// clang version may produce a different object (mk/probe.mk checks for a diff).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -cc clang -target bpfel -type event -type core_state -type queue_counter -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" probe bpf/probe.c
