# Kernel matrix (make test-kernels): boot Debian's x86_64 and arm64 kernels (6.1, 6.12) under
# qemu TCG, once each, and run the probe, the blocker tracer and
# confinement (v1 cpuset where the kernel has one, cgroup v2), coreyield,
# the AF_XDP and AF_PACKET DP loops and the kernel module there
# (scripts/kernel-matrix.sh, scripts/kernelmatrix). Writes
# out/kernels/matrix.md (the README's kernel table) and matrix.json; kernels
# and headers are cached in out/kernels/debs. About 6 minutes on the 2-core
# development VM, quiet (the x86_64 guests also run testpmd on cgroup2).
#
# Part of make test. The two steps that once failed now and then under TCG
# on the 2-core VM no longer race the emulator: the probe's counters are
# sent in chunks, each counted before the next, and the module's blocker
# test holds the DP CPU five times 8 ms in a row, so a kick the emulator
# delays still lands in a hold.
TEST_EXTRA += test-kernels

.PHONY: test-kernels
test-kernels:
	./scripts/kernel-matrix.sh
