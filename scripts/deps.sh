#!/usr/bin/env bash
# Installs the Debian packages taichi's build, demo and tests use. Idempotent:
# apt-get runs only when something is missing.
set -euo pipefail
pkgs=(
  iproute2 nftables ethtool          # testbed, control-plane vports, tc/nft rules
  iputils-ping                       # taichi eval ping: the real ping client against the DP loop
  clang llvm libbpf-dev              # BPF probe (go generate) and its CI diff check
  dpdk-dev                           # dpdk-testpmd for the DPDK lcore tests
  openvswitch-switch-dpdk            # dataplane/ovs: a private OVS-DPDK (ovs-vswitchd-dpdk, ovsdb-server, ovs-vsctl)
  stress-ng rt-tests                 # kernel-heavy CP load, cyclictest reference
  python3 bash                       # heterogeneous CP helpers
  qemu-system-x86 busybox-static cpio kmod linux-headers-amd64 linux-image-amd64 dwarves  # kernel module boot test (dwarves: pahole, module BTF for the kfunc)
  qemu-user-static libc6-dev-arm64-cross  # arm64 test pass (make test-arm64): qemu-aarch64-static, arm64 C headers for the uapi layout check
  qemu-system-arm gcc-aarch64-linux-gnu xz-utils zstd  # kernel matrix (make test-kernels): arm64 guests, the module cross-built, compressed modules
  lintian dkms file                  # make deb: package checks and the DKMS build in its install test
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The kernel matrix (make test-kernels) fetches arm64 kernels, headers and
# guest userland with apt-get download: dpkg must know the architecture.
add_arm64=0
dpkg --print-foreign-architectures | grep -qx arm64 || add_arm64=1
if [ ${#missing[@]} -eq 0 ] && [ $add_arm64 = 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  [ $add_arm64 = 0 ] || missing+=("dpkg architecture arm64")
  echo "deps: missing Debian packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
if [ $add_arm64 = 1 ]; then
  echo "deps: adding the dpkg architecture arm64 (kernel matrix downloads)"
  dpkg --add-architecture arm64
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
