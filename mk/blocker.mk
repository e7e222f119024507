# blocker: the committed bpf2go output (blocker/tracer_{x86,arm64}_bpfel.{go,o})
# must be what blocker/bpf/tracer.c compiles to. Regenerate and fail on any
# diff in the generated files. The flags are pinned in blocker/gen.go; the
# objects are built with Debian bookworm's clang 14.0.6, and another clang
# major may emit different bytes.
BLOCKER_CLANG_MAJOR := 14

TEST_EXTRA += blocker-bpf-check

.PHONY: blocker-bpf-generate blocker-bpf-check

blocker-bpf-generate:
	@clang --version | head -1 | grep -q 'version $(BLOCKER_CLANG_MAJOR)\.' || \
		{ echo "blocker: clang $(BLOCKER_CLANG_MAJOR) needed for reproducible objects, found: $$(clang --version | head -1)"; exit 1; }
	cd blocker && $(GO) generate ./...

blocker-bpf-check: blocker-bpf-generate
	@git diff --exit-code --stat -- 'blocker/*_bpfel.go' 'blocker/*_bpfel.o' || \
		{ echo "blocker: regenerated BPF output differs from the committed one (run make blocker-bpf-generate and commit)"; exit 1; }
