#!/usr/bin/env bash
# kernel-matrix.sh: run taichi's kernel-facing tests on the kernels DPUs and
# hosts run: Debian's x86_64 and arm64 kernels, 6.1 and 6.12, each booted
# once under qemu (TCG: this machine's /dev/kvm runs only PVM guests) with an
# initramfs holding busybox, iproute2, static test binaries of the
# privileged packages (probe, blocker, vcpu, internal/coreyield, dataplane)
# and the kernel module built against that kernel's headers
# (scripts/kmod-qemu-test.sh KMOD_STAGE_ONLY=1). The guest's init is
# `kernelmatrix guest` (scripts/kernelmatrix); `kernelmatrix report` judges
# the console logs and writes OUT/matrix.md and OUT/matrix.json.
#
# Packages come from apt (apt-get download, dpkg -x) and stay cached in
# OUT/debs: a second run downloads nothing. A package apt cannot find is an
# error that names it. scripts/deps.sh installs the tools (qemu-system-x86,
# qemu-system-arm, gcc-aarch64-linux-gnu) and adds the arm64 architecture.
#
# Usage: scripts/kernel-matrix.sh
# Env:   KMATRIX_OUT      work and cache directory (default out/kernels)
#        KMATRIX_ONLY     run only these rows (space-separated, e.g. "arm64-6.12")
#        KMATRIX_TIMEOUT  hard limit for one guest in seconds (default 240)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
out=${KMATRIX_OUT:-$root/out/kernels}
vm_timeout=${KMATRIX_TIMEOUT:-240}
debs=$out/debs

# row  Debian arch  the meta package that names the kernel's current ABI
rows=(
  "x86_64-6.1  amd64 linux-image-amd64"
  "x86_64-6.12 amd64 linux-image-6.12-amd64"
  "arm64-6.1   arm64 linux-image-arm64"
  "arm64-6.12  arm64 linux-image-6.12-arm64"
)
# The guests' userland besides busybox: iproute2's ip (the testbed needs its
# netns, bridge and JSON support) and the libraries it links.
userland=(iproute2 libbpf1 libelf1 libmnl0 libbsd0 libcap2 libc6 zlib1g libmd0)

die() { echo "kernel-matrix: $*" >&2; exit 1; }
say() { echo "kernel-matrix: $*"; }

for tool in apt-get apt-cache dpkg cpio go timeout qemu-system-x86_64 qemu-system-aarch64 aarch64-linux-gnu-gcc; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh (as root) first"
done
dpkg --print-foreign-architectures | grep -qx arm64 ||
  die "dpkg has no arm64 architecture: run scripts/deps.sh (dpkg --add-architecture arm64, apt-get update)"

# depends PKG PATTERN: the names PKG depends on that match PATTERN
# (architecture qualifiers and virtual-package brackets removed).
depends() {
  apt-cache depends --important "$1" 2>/dev/null | awk '$1 ~ /Depends:/ {print $2}' |
    tr -d '<>' | sed 's/:.*//' | grep -E "$2" | head -1
}

# fetch PKG ARCH: the cached .deb of PKG for ARCH (or all), downloading it
# once. Prints the file's path.
fetch() {
  local pkg=$1 arch=$2 f
  f=$(ls "$debs/${pkg}_"*"_${arch}.deb" "$debs/${pkg}_"*"_all.deb" 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    (cd "$debs" && apt-get download -q "$pkg:$arch" >/dev/null 2>"$debs/.err") ||
      die "apt-get download $pkg:$arch failed (package missing from apt? run scripts/deps.sh): $(tail -1 "$debs/.err")"
    f=$(ls "$debs/${pkg}_"*"_${arch}.deb" "$debs/${pkg}_"*"_all.deb" 2>/dev/null | head -1 || true)
    [ -n "$f" ] || die "apt-get download $pkg:$arch left no .deb in $debs"
  fi
  echo "$f"
}

# extract DIR PKG:ARCH...: dpkg -x each package into DIR once.
extract() {
  local dir=$1 spec
  shift
  # .done names what was extracted: a new kernel ABI in apt extracts anew.
  [ "$(cat "$dir/.done" 2>/dev/null)" = "$*" ] && return 0
  rm -rf "$dir"
  mkdir -p "$dir"
  local deb
  for spec in "$@"; do
    deb=$(fetch "${spec%%:*}" "${spec##*:}") || exit 1
    dpkg -x "$deb" "$dir"
  done
  echo "$*" >"$dir/.done"
}

# userland_for ARCH: busybox, ip and its libraries in $out/userland-ARCH.
userland_for() {
  local arch=$1 dir=$out/userland-$1 specs=(busybox-static:$1) p
  for p in "${userland[@]}"; do specs+=("$p:$arch"); done
  extract "$dir" "${specs[@]}"
  rm -rf "$dir/usr/share" "$dir"/usr/lib/*/gconv
}

# Kernel modules the guests load (Debian builds them as modules): veth
# pairs and the testbed's bridge.
guest_modules=(veth bridge)

# stage_modules ROOT KVER DEST: copy the guest modules and what they depend
# on (modules.dep), uncompressed, into DEST, and list them in load order in
# DEST/load.list.
stage_modules() {
  local mroot=$1/lib/modules/$2 dest=$3 m
  mkdir -p "$dest"
  : >"$dest/load.list"
  # The package leaves modules.dep to depmod at install time.
  [ -f "$mroot/modules.dep" ] || depmod -b "$1" "$2" || die "depmod -b $1 $2 failed"
  for m in "${guest_modules[@]}"; do
    local line
    line=$(grep -E "/$m\.ko(\.xz|\.zst)?:" "$mroot/modules.dep") || die "module $m not in $mroot/modules.dep"
    # modules.dep: "mod.ko: dep1.ko dep2.ko"; dependencies load last-first.
    local deps=(${line#*:}) i
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do stage_module "$mroot" "${deps[$i]}" "$dest"; done
    stage_module "$mroot" "${line%%:*}" "$dest"
  done
}

stage_module() {
  local src=$1/$2 dest=$3 name
  name=$(basename "$2")
  name=${name%.xz}
  name=${name%.zst}
  grep -qx "$name" "$dest/load.list" && return 0
  case $src in
    *.xz) xz -dc "$src" >"$dest/$name" ;;
    *.zst) zstd -qdc "$src" >"$dest/$name" ;;
    *) cp "$src" "$dest/$name" ;;
  esac
  echo "$name" >>"$dest/load.list"
}

# tests_for ARCH: the static test binaries and the guest driver, built once
# per run (the source may have changed since the last one).
tests_for() {
  local arch=$1 dir=$out/tests-$1 pkg
  rm -rf "$dir"
  mkdir -p "$dir"
  for pkg in probe blocker vcpu internal/coreyield dataplane dataplane/dpdk; do
    CGO_ENABLED=0 GOOS=linux GOARCH=$arch go test -c -trimpath -ldflags=-s -o "$dir/$(basename "$pkg").test" "./$pkg"
  done
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags=-s -o "$dir/kernelmatrix" ./scripts/kernelmatrix
  # The module step's binaries, for every kernel of this arch.
  mkdir -p "$dir/kmod"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -o "$dir/kmod/qemutest" ./kmod/qemutest
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags=-s -o "$dir/kmod/taichi" ./cmd/taichi
}

# stage_dpdk ROOT: this machine's dpdk-testpmd, the two drivers the dpdk
# tests use (af_packet ports, the ring mempool) and every library they link,
# at their own paths under ROOT, for the x86_64 guests' testpmd step. DPDK
# loads drivers from its build-time plugin directory, which therefore holds
# these two alone.
stage_dpdk() {
  local dest=$1 bin pmds lib
  bin=$(command -v dpdk-testpmd) || die "dpdk-testpmd not found: run scripts/deps.sh (Debian: dpdk)"
  pmds=$(ls -d /usr/lib/x86_64-linux-gnu/dpdk/pmds-* 2>/dev/null | head -1)
  [ -n "$pmds" ] || die "no DPDK driver directory /usr/lib/x86_64-linux-gnu/dpdk/pmds-*: run scripts/deps.sh (Debian: dpdk)"
  mkdir -p "$dest/usr/bin" "$dest$pmds" "$dest/var/run"
  cp "$bin" "$dest/usr/bin/"
  cp -a "$pmds"/librte_net_af_packet.so* "$pmds"/librte_mempool_ring.so* "$dest$pmds/"
  for lib in $(ldd "$bin" "$pmds"/librte_net_af_packet.so "$pmds"/librte_mempool_ring.so |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u); do
    # The guest's userland (the same Debian release) may have it already,
    # possibly as a symlink to an absolute path: never write through one.
    if [ -e "$dest$lib" ] || [ -L "$dest$lib" ]; then continue; fi
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
  done
}

# prepare ROW ARCH META: kernel, headers, module payload and initramfs for
# one row, in $out/ROW.
prepare() {
  local row=$1 arch=$2 meta=$3 dir=$out/$1 abi common kbuild kdir image
  abi=$(depends "$meta:$arch" '^linux-image-[0-9]') ||
    die "$meta:$arch: apt does not know it or its kernel (run scripts/deps.sh)"
  [ -n "$abi" ] || die "$meta:$arch names no linux-image package (run scripts/deps.sh)"
  abi=${abi#linux-image-}
  common=$(depends "linux-headers-$abi:$arch" '^linux-headers-.*-common$') || true
  kbuild=$(depends "linux-headers-$abi:$arch" '^linux-kbuild-') || true
  [ -n "$common" ] && [ -n "$kbuild" ] || die "linux-headers-$abi:$arch: cannot find its -common and linux-kbuild packages in apt"
  # The kbuild helpers (fixdep, modpost) run on this machine: take them for
  # amd64 whatever the target, so nothing runs under qemu-user.
  extract "$dir/root" "linux-image-$abi:$arch" "linux-headers-$abi:$arch" "$common:all" "$kbuild:amd64"
  kdir=$dir/root/usr/src/linux-headers-$abi
  image=$dir/root/boot/vmlinuz-$abi
  # Debian's headers Makefile includes the -common tree by absolute path.
  sed -i "s#^include /usr/src/#include $dir/root/usr/src/#" "$kdir/Makefile"
  cp "$dir/root/boot/config-$abi" "$dir/config"
  say "$row: $abi"
  KMOD_ARCH=$arch KMOD_PREBUILT=$out/tests-$arch/kmod KMOD_KERNEL=$image KMOD_KDIR=$kdir KMOD_STAGE_ONLY=1 \
    ./scripts/kmod-qemu-test.sh "$dir/kmod" >"$dir/kmod-build.log" 2>&1 ||
    { cat "$dir/kmod-build.log"; die "$row: module build failed"; }

  local initramfs=$dir/initramfs
  rm -rf "$initramfs"
  mkdir -p "$initramfs"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,tests}
  cp -a "$out/userland-$arch"/. "$initramfs/"
  rm -f "$initramfs/.done"
  cp "$out/userland-$arch/bin/busybox" "$initramfs/bin/busybox"
  cp -a "$dir/kmod/payload" "$initramfs/kmod"
  stage_modules "$dir/root" "$abi" "$initramfs/modules"
  cp "$out/tests-$arch"/*.test "$initramfs/tests/"
  if [ "$arch" = amd64 ]; then stage_dpdk "$initramfs"; fi
  cp "$out/tests-$arch/kernelmatrix" "$initramfs/kernelmatrix"
  cat >"$initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp TAICHI_TEST_STRICT=1 TAICHI_TEST_TCG=1
# Not exec: this shell, PID 1, reaps the orphans the tests leave (a zombie
# keeps its cgroups, and a v1 hierarchy with a cgroup cannot go away).
/kernelmatrix guest
poweroff -f
EOF
  chmod +x "$initramfs/init"
  # Uncompressed: TCG spends less time unpacking it than gunzip would.
  (cd "$initramfs" && find . | cpio -o -H newc --quiet) >"$dir/initramfs.cpio"
}

# boot ROW ARCH: run the row's guest under a hard timeout; the console
# goes to $out/ROW/console.txt.
boot() {
  local row=$1 arch=$2 dir=$out/$1 start rc
  local image
  image=$(ls "$dir"/root/boot/vmlinuz-*)
  # One host thread for all vCPUs: with QEMU 7.2's multi-threaded TCG the
  # 6.12 guest died in "Oops: int3" in __schedule while the kernel live-
  # patched its text for the tracer (text_poke_bp), and on this 2-core
  # machine the single thread was no slower.
  # -cpu max: Debian's DPDK needs SSE4.2 (the default qemu64 model makes
  # testpmd die of an illegal instruction).
  local qemu=(qemu-system-x86_64 -accel tcg,thread=single -cpu max)
  local console=ttyS0
  if [ "$arch" = arm64 ]; then
    # pauth-impdef: pointer authentication with QEMU's own cheap hash;
    # the architected one makes TCG 2-3 times slower.
    qemu=(qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on)
    console=ttyAMA0
  fi
  start=$(date +%s)
  set +e
  timeout --kill-after=10 "$vm_timeout" "${qemu[@]}" -m 1536 -smp 2 -nographic -no-reboot \
    -kernel "$image" -initrd "$dir/initramfs.cpio" \
    -append "console=$console panic=-1 quiet" </dev/null >"$dir/console.log" 2>&1
  rc=$?
  set -e
  tr -d '\r' <"$dir/console.log" >"$dir/console.txt"
  say "$row: guest ran $(($(date +%s) - start))s (qemu exit $rc)"
  grep -E '^KM-(TEST|STEP|VERDICT)' "$dir/console.txt" | sed "s/^/  $row: /" || true
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    say "$row: guest hit the ${vm_timeout}s hard timeout (see $dir/console.txt)"
  fi
}

mkdir -p "$debs"
t0=$(date +%s)
selected=()
for r in "${rows[@]}"; do
  read -r row arch meta <<<"$r"
  if [ -n "${KMATRIX_ONLY:-}" ] && ! grep -qw -- "$row" <<<"$KMATRIX_ONLY"; then
    continue
  fi
  selected+=("$r")
done
[ ${#selected[@]} -gt 0 ] || die "KMATRIX_ONLY=${KMATRIX_ONLY:-} selects no row (rows: x86_64-6.1 x86_64-6.12 arm64-6.1 arm64-6.12)"
declare -A built=()
for r in "${selected[@]}"; do
  read -r row arch meta <<<"$r"
  if [ -z "${built[$arch]:-}" ]; then
    userland_for "$arch"
    tests_for "$arch"
    built[$arch]=1
  fi
  prepare "$row" "$arch" "$meta"
done
say "prepared in $(($(date +%s) - t0))s"
args=()
for r in "${selected[@]}"; do
  read -r row arch meta <<<"$r"
  boot "$row" "$arch"
  args+=("$row=$out/$row")
done
say "matrix took $(($(date +%s) - t0))s"
go run ./scripts/kernelmatrix report -md "$out/matrix.md" -json "$out/matrix.json" "${args[@]}"
