#!/usr/bin/env bash
# kmod-qemu-test.sh: build taichi.ko against the Debian kernel image
# installed on this machine (its matching linux-headers), boot that kernel
# under qemu (TCG) with a busybox initramfs holding the module and the static
# test binary kmod/qemutest (3 vCPUs: DP core 1, kickers on 0 and 2), and check the run: the PASS marker must appear
# and the console log must hold no Oops/BUG/WARNING/Call Trace.
#
# Usage: scripts/kmod-qemu-test.sh [WORKDIR]   (default out/kmod-qemu)
# Env:   KMOD_QEMU_TIMEOUT  hard limit for the VM in seconds (default 150)
#        KMOD_KVER          kernel version to use (default: newest image with headers)
#        KMOD_QEMU_SMP      vCPUs (default 3; the concurrent-kick check needs 3)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
work=${1:-$root/out/kmod-qemu}
vm_timeout=${KMOD_QEMU_TIMEOUT:-150}
smp=${KMOD_QEMU_SMP:-3}

die() { echo "kmod-qemu-test: $*" >&2; exit 1; }

for tool in qemu-system-x86_64 cpio gzip make gcc go timeout; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh (as root) first"
done
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found: install busybox-static (scripts/deps.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static (scripts/deps.sh)"
fi

# The kernel we boot and the headers we build against must be the same version.
kver=${KMOD_KVER:-}
if [ -z "$kver" ]; then
  for img in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
    v=${img#/boot/vmlinuz-}
    if [ -f "/usr/src/linux-headers-$v/Makefile" ] || [ -f "/lib/modules/$v/build/Makefile" ]; then
      kver=$v
      break
    fi
  done
fi
[ -n "$kver" ] || die "no /boot/vmlinuz-<ver> with matching headers: install linux-image-amd64 and linux-headers-amd64 (scripts/deps.sh)"
kernel=/boot/vmlinuz-$kver
[ -r "$kernel" ] || die "$kernel not readable (run as root)"
kdir=/usr/src/linux-headers-$kver
[ -f "$kdir/Makefile" ] || kdir=/lib/modules/$kver/build
[ -f "$kdir/Makefile" ] || die "headers for $kver not found"
echo "kmod-qemu-test: kernel $kver, headers $kdir"

rm -rf "$work"
mkdir -p "$work/build" "$work/initramfs"/{bin,dev,proc,sys,tmp}

# Build in a copy so the source tree stays clean.
cp "$root"/kmod/module/{taichi.c,taichi_uapi.h,Kbuild,Makefile} "$work/build/"
make -s -C "$work/build" KDIR="$kdir" >"$work/build.log" 2>&1 || { cat "$work/build.log"; die "module build failed"; }
if grep -E 'warning:|error:' "$work/build.log"; then
  die "module build printed warnings"
fi
grep -v '^Skipping BTF' "$work/build.log" || true

# Module BTF (needed for the BPF kfunc): Debian's headers ship neither
# vmlinux nor resolve_btfids, so take vmlinux out of the image we boot, run
# pahole (package dwarves) like Kbuild would, and resolve the kfunc set's IDs.
kfunc_arg=
if command -v pahole >/dev/null && command -v clang >/dev/null; then
  off=$(python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); print(min([i for i in (d.find(b"\xfd7zXZ\x00"), d.find(b"\x28\xb5\x2f\xfd"), d.find(b"\x1f\x8b\x08")) if i >= 0] or [-1]))' "$kernel")
  [ "$off" -ge 0 ] || die "cannot find the compressed vmlinux inside $kernel"
  # The decompressors stop at the end of their stream: ignore SIGPIPE and
  # trailing-garbage complaints, then check what came out.
  for unpack in "xz -dc" "zstd -dc" "gzip -dc"; do
    tail -c +$((off + 1)) "$kernel" 2>/dev/null | $unpack >"$work/vmlinux" 2>/dev/null || true
    [ -s "$work/vmlinux" ] && break
  done
  sections=$(readelf -S "$work/vmlinux" 2>/dev/null || true)
  grep -q '\.BTF ' <<<"$sections" || die "no BTF in the vmlinux extracted from $kernel"
  LLVM_OBJCOPY=objcopy pahole -J --btf_gen_floats -j --lang_exclude=rust --btf_base "$work/vmlinux" "$work/build/taichi.ko"
  go run ./kmod/resolvebtfids -vmlinux "$work/vmlinux" "$work/build/taichi.ko"
  clang -O2 -g -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -c kmod/bpf/kick.bpf.c -o "$work/initramfs/kick.bpf.o"
  kfunc_arg=/kick.bpf.o
else
  echo "kmod-qemu-test: pahole (Debian package dwarves) or clang missing: module without BTF, BPF kfunc not tested"
fi
cp "$work/build/taichi.ko" "$work/initramfs/"

CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -o "$work/initramfs/qemutest" ./kmod/qemutest
# The CLI (taichi kmod stats|blockers) is checked in the VM too.
# (A broken cmd/taichi fails `make build` anyway; here it only skips that part.)
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags=-s -o "$work/initramfs/taichi" ./cmd/taichi ||
  echo "kmod-qemu-test: WARNING-CLI: cmd/taichi does not build, taichi kmod CLI check skipped"

cp "$busybox" "$work/initramfs/bin/busybox"
echo "$kfunc_arg" >"$work/initramfs/kfunc_arg"
cat >"$work/initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
ok=1
say() { echo "kmod-qemu: $*"; }
fail() { echo "kmod-qemu: FAIL: $*"; ok=0; }
say "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs"
if insmod /taichi.ko test_hold=1; then
  if [ ! -c /dev/taichi ]; then
    mm=$(cat /sys/class/misc/taichi/dev)
    mknod -m 600 /dev/taichi c "${mm%%:*}" "${mm##*:}"
  fi
  mode=$(stat -c %a /dev/taichi)
  [ "$mode" = 600 ] || fail "/dev/taichi mode $mode, want 600"
  /qemutest run $(cat /kfunc_arg) || fail "qemutest run"
  if [ -x /taichi ]; then
    say "cli begin"
    /taichi kmod stats --cpu 1 || fail "taichi kmod stats"
    /taichi kmod blockers --cpu 1 >/tmp/blockers.txt || fail "taichi kmod blockers"
    cat /tmp/blockers.txt
    grep -q taichi_test_hold_spin /tmp/blockers.txt || fail "taichi kmod blockers does not show the test hold record"
    /taichi kmod blockers --json --consume >/tmp/blockers.json || fail "taichi kmod blockers --json"
    grep -q 'taichi_test_hold_spin' /tmp/blockers.json || fail "JSON lacks the record"
    say "cli end"
  fi

  # Unload safety: the module cannot go while a DP thread is registered
  # through an open fd; killing the holder (thread dies inside WAIT) frees it.
  /qemutest hold-open >/tmp/hold.log 2>&1 &
  holder=$!
  i=0
  while ! grep -q HOLDING /tmp/hold.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  grep -q HOLDING /tmp/hold.log || fail "hold-open did not register: $(cat /tmp/hold.log)"
  if rmmod taichi 2>/dev/null; then fail "rmmod succeeded while a DP thread was registered"; fi
  kill -9 $holder
  wait $holder 2>/dev/null
  rmmod taichi || fail "rmmod after the holder died"
  [ -e /sys/module/taichi ] && fail "module still loaded"
  say "unload ok"
else
  fail "insmod"
fi
say "dmesg begin"
dmesg
say "dmesg end"
taint=$(cat /proc/sys/kernel/tainted)
say "tainted=$taint"
# W (warning, 512) or D (oops, 128); O/E (out-of-tree, unsigned) are expected.
[ $((taint & 640)) -eq 0 ] || fail "kernel tainted by a warning or an oops ($taint)"
if [ $ok = 1 ]; then echo "TAICHI-KMOD-PASS"; else echo "TAICHI-KMOD-FAIL"; fi
poweroff -f
EOF
chmod +x "$work/initramfs/init"
(cd "$work/initramfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"

log=$work/console.log
echo "kmod-qemu-test: booting (TCG, hard timeout ${vm_timeout}s), console in $log"
start=$(date +%s)
set +e
timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 -m 512 -smp "$smp" -nographic -no-reboot \
  -kernel "$kernel" -initrd "$work/initramfs.cpio.gz" \
  -append 'console=ttyS0 panic=-1 quiet' </dev/null >"$log" 2>&1
rc=$?
set -e
echo "kmod-qemu-test: VM ran $(( $(date +%s) - start ))s (exit $rc)"
tr -d '\r' <"$log" >"$log.txt"

# The qemutest summary, then the CLI's view of the same module.
grep -E '^(qemutest|kmod-qemu|FAIL|LAT|HIST|BLOCKER|QEMUTEST)' "$log.txt" | grep -v 'bad input ok' || true
sed -n '/^kmod-qemu: cli begin/,/^kmod-qemu: cli end/p' "$log.txt"
bad=$(grep -nE 'Oops|BUG|WARNING|Call Trace' "$log.txt" || true)
if [ -n "$bad" ]; then
  echo "$bad"
  die "kernel reported a problem (see $log.txt)"
fi
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  die "VM timed out after ${vm_timeout}s (see $log.txt)"
fi
grep -q '^TAICHI-KMOD-PASS' "$log.txt" || die "no PASS marker (see $log.txt)"
echo "kmod-qemu-test: PASS"
