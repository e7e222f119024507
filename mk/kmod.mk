# Kernel module: build taichi.ko against the installed Debian kernel's
# headers and boot-test it under qemu (TCG) with a hard timeout.
TEST_EXTRA += test-kmod

.PHONY: test-kmod
test-kmod:
	./scripts/kmod-qemu-test.sh
