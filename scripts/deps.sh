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
  lintian dkms file                  # make deb: package checks and the DKMS build in its install test
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
