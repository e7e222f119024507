#!/usr/bin/env bash
# kmod-qemu-test.sh: build taichi.ko against a Debian kernel's headers (by
# default the image installed on this machine and its matching
# linux-headers), boot that kernel under qemu (TCG) with a busybox initramfs
# holding the module and the static test binary kmod/qemutest (3 vCPUs: DP
# core 1, kickers on 0 and 2), and check the run: the PASS marker must
# appear and the console log must hold no Oops/BUG/WARNING/Call Trace. The
# checks inside the guest are scripts/kmod-guest.sh.
#
# Usage: scripts/kmod-qemu-test.sh [WORKDIR]   (default out/kmod-qemu)
# Env:   KMOD_QEMU_TIMEOUT  hard limit for the VM in seconds (default 150)
#        KMOD_KVER          installed kernel version to use (default: newest
#                           image with headers)
#        KMOD_QEMU_SMP      vCPUs (default 3; the concurrent-kick check needs 3)
#        KMOD_ARCH          amd64 (default) or arm64: cross-compiles the module
#                           (gcc-aarch64-linux-gnu) and the Go binaries
#        KMOD_KERNEL, KMOD_KDIR  a kernel image and its headers directory
#                           (both), instead of the installed kernel
#        KMOD_PREBUILT      a directory with qemutest and taichi already built
#                           for KMOD_ARCH (the matrix builds them once an arch)
#        KMOD_STAGE_ONLY=1  build and stage WORKDIR/payload (module, binaries,
#                           kmod-guest.sh as guest.sh) without booting: the
#                           kernel matrix (scripts/kernel-matrix.sh) packs it
#                           into its guests
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
work=${1:-$root/out/kmod-qemu}
vm_timeout=${KMOD_QEMU_TIMEOUT:-150}
smp=${KMOD_QEMU_SMP:-3}
arch=${KMOD_ARCH:-amd64}
stage_only=${KMOD_STAGE_ONLY:-0}

die() { echo "kmod-qemu-test: $*" >&2; exit 1; }

case $arch in
  amd64) karch=x86_64 cross= ;;
  arm64) karch=arm64 cross=aarch64-linux-gnu- ;;
  *) die "KMOD_ARCH=$arch: want amd64 or arm64" ;;
esac
tools=(cpio gzip make "${cross}gcc" go timeout python3)
[ "$stage_only" = 1 ] || tools+=(qemu-system-x86_64)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh (as root) first"
done

# The kernel we boot and the headers we build against must be the same version.
if [ -n "${KMOD_KERNEL:-}${KMOD_KDIR:-}" ]; then
  kernel=${KMOD_KERNEL:?KMOD_KERNEL and KMOD_KDIR go together}
  kdir=${KMOD_KDIR:?KMOD_KERNEL and KMOD_KDIR go together}
  kver=$(basename "$kernel")
  kver=${kver#vmlinuz-}
else
  [ "$arch" = amd64 ] || die "KMOD_ARCH=$arch needs KMOD_KERNEL and KMOD_KDIR"
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
  kdir=/usr/src/linux-headers-$kver
  [ -f "$kdir/Makefile" ] || kdir=/lib/modules/$kver/build
fi
[ -r "$kernel" ] || die "$kernel not readable (run as root)"
[ -f "$kdir/Makefile" ] || die "headers for $kver not found ($kdir)"
echo "kmod-qemu-test: kernel $kver ($arch), headers $kdir"

rm -rf "$work"
payload=$work/payload
mkdir -p "$work/build" "$payload"

# Build in a copy so the source tree stays clean.
cp "$root"/kmod/module/{taichi.c,taichi_uapi.h,Kbuild,Makefile} "$work/build/"
make -s -C "$work/build" KDIR="$kdir" ARCH="$karch" CROSS_COMPILE="$cross" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; die "module build failed"; }
if grep -E 'warning:|error:' "$work/build.log"; then
  die "module build printed warnings"
fi
grep -v '^Skipping BTF' "$work/build.log" || true

# Module BTF (needed for the BPF kfunc): Debian's headers ship neither
# vmlinux nor resolve_btfids, so take the kernel's BTF out of the image we
# boot (scripts/kernel-btf.py: the .BTF section of the vmlinux compressed in
# an x86 bzImage, the raw BTF blob in an uncompressed arm64 Image), run
# pahole (package dwarves) like Kbuild would, and resolve the kfunc set's IDs.
kfunc_arg=
if command -v pahole >/dev/null && command -v clang >/dev/null; then
  python3 scripts/kernel-btf.py "$kernel" "$work/vmlinux.btf" || die "no kernel BTF found inside $kernel"
  LLVM_OBJCOPY=${cross}objcopy pahole -J --btf_gen_floats -j --lang_exclude=rust --btf_base "$work/vmlinux.btf" "$work/build/taichi.ko"
  go run ./kmod/resolvebtfids -vmlinux "$work/vmlinux.btf" "$work/build/taichi.ko"
  clang -O2 -g -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -c kmod/bpf/kick.bpf.c -o "$payload/kick.bpf.o"
  kfunc_arg=kick.bpf.o
else
  echo "kmod-qemu-test: pahole (Debian package dwarves) or clang missing: module without BTF, BPF kfunc not tested"
fi
cp "$work/build/taichi.ko" "$payload/"
echo "$kfunc_arg" >"$payload/kfunc_arg"
# Whether spinlocks raise preempt_count on this kernel (qemutest's blocker
# check depends on it): Debian's arm64 kernels are built without it.
if grep -q '^CONFIG_PREEMPT_COUNT=y' "$kdir/.config"; then echo 1; else echo 0; fi >"$payload/preempt_count"
cp scripts/kmod-guest.sh "$payload/guest.sh"

if [ -n "${KMOD_PREBUILT:-}" ]; then
  cp "$KMOD_PREBUILT/qemutest" "$KMOD_PREBUILT/taichi" "$payload/"
else
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -o "$payload/qemutest" ./kmod/qemutest
  # The CLI (taichi kmod stats|blockers) is checked in the VM too.
  # (A broken cmd/taichi fails `make build` anyway; here it only skips that part.)
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags=-s -o "$payload/taichi" ./cmd/taichi ||
    echo "kmod-qemu-test: WARNING-CLI: cmd/taichi does not build, taichi kmod CLI check skipped"
fi
if [ "$stage_only" = 1 ]; then
  echo "kmod-qemu-test: staged $payload"
  exit 0
fi

[ "$arch" = amd64 ] || die "KMOD_ARCH=$arch boots in scripts/kernel-matrix.sh; use KMOD_STAGE_ONLY=1"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found: install busybox-static (scripts/deps.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static (scripts/deps.sh)"
fi
mkdir -p "$work/initramfs"/{bin,dev,proc,sys,tmp}
cp -a "$payload" "$work/initramfs/kmod"
cp "$busybox" "$work/initramfs/bin/busybox"
cat >"$work/initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
sh /kmod/guest.sh /kmod
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
