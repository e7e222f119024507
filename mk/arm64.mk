# arm64 pass: every package's unit tests built for arm64 and run under
# qemu-user (go test -exec, so binfmt_misc is not needed). Tests that need the
# host kernel (cgroups, BPF, network namespaces, SCHED_FIFO) detect the
# emulator and skip, saying what they need (internal/testenv); the rest runs
# as arm64: codecs, uapi layout (clang, arm64 headers), BPF object parsing,
# sched_attr, the CLI. gotestsum prints one line per package, every skip with
# its reason, and the count of tests that ran.
# No -race: it needs cgo for arm64, and ThreadSanitizer refuses qemu-user's
# address space ("unsupported VMA range").
ARM64_EXEC ?= qemu-aarch64-static

TEST_EXTRA += test-arm64

.PHONY: test-arm64
test-arm64:
	@command -v $(ARM64_EXEC) >/dev/null || \
		{ echo "test-arm64: $(ARM64_EXEC) not found (Debian: qemu-user-static; run make deps)"; exit 1; }
	@mkdir -p $(TEST_OUT)
	$(GOTESTSUM) --format pkgname --format-hide-empty-pkg --format-icons text --hide-summary skipped --jsonfile $(TEST_OUT)/arm64.json \
		--post-run-command 'sh -c "echo test-arm64: $$(($$TESTS_TOTAL - $$TESTS_SKIPPED)) tests and subtests ran as arm64, $$TESTS_SKIPPED skipped, $$TESTS_FAILED failed, in $$GOTESTSUM_ELAPSED"' \
		--raw-command -- env GOARCH=arm64 TAICHI_TEST_EMULATOR=$(notdir $(ARM64_EXEC)) \
		$(GO) test -json -count=1 -timeout 10m -exec $(ARM64_EXEC) $(PKGS)
