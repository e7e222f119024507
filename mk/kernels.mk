# Kernel matrix (make test-kernels): boot Debian's x86_64 and arm64 kernels (6.1, 6.12) under
# qemu TCG, once each, and run the probe, the blocker tracer and
# confinement (v1 cpuset where the kernel has one, cgroup v2), coreyield,
# the AF_XDP and AF_PACKET DP loops and the kernel module there
# (scripts/kernel-matrix.sh, scripts/kernelmatrix). Writes
# out/kernels/matrix.md (the README's kernel table) and matrix.json; kernels
# and headers are cached in out/kernels/debs. About 5 minutes on the 2-core
# development VM (9 when other builds load it heavily).
#
# Not part of make test yet: under TCG on the 2-core VM its timing-bound
# steps failed in 2 of the last 4 full runs, on different kernels each time
# (the module's blocker record on x86 6.1, then the probe's counters on
# x86 6.1 and arm64 6.1 and the blocker record on x86 6.12). It runs on its
# own until those steps hold under emulation.

.PHONY: test-kernels
test-kernels:
	./scripts/kernel-matrix.sh
