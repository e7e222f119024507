# Kernel matrix: boot Debian's x86_64 and arm64 kernels (6.1, 6.12) under
# qemu TCG, once each, and run the probe, the blocker tracer and
# confinement (v1 cpuset where the kernel has one, cgroup v2), coreyield,
# the AF_XDP and AF_PACKET DP loops and the kernel module there
# (scripts/kernel-matrix.sh, scripts/kernelmatrix). Writes
# out/kernels/matrix.md (the README's kernel table) and matrix.json; kernels
# and headers are cached in out/kernels/debs. About 5 minutes on the 2-core
# development VM (9 when other builds load it heavily).
TEST_EXTRA += test-kernels

.PHONY: test-kernels
test-kernels:
	./scripts/kernel-matrix.sh
