# Debian packages: `make deb` builds taichi_<ver>_{amd64,arm64}.deb and
# taichi-dkms_<ver>_all.deb into out/deb (version from git describe, set in the
# binary by the linker). test-deb builds them again, runs lintian and installs
# them on this machine for real, then purges them (scripts/deb-install-test.sh).
TEST_EXTRA += test-deb

.PHONY: deb test-deb
deb:
	rm -rf out/deb
	GO=$(GO) ./scripts/build-deb.sh out/deb

test-deb:
	GO=$(GO) ./scripts/deb-install-test.sh
