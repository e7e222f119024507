# probe: the committed bpf2go output (probe/probe_bpfel.go, probe/probe_bpfel.o)
# must be what probe/bpf/probe.c compiles to. Regenerate and fail on any diff
# in the generated files (the rest of probe/ may hold work in progress).
# The flags are pinned in probe/gen.go; the object is built with Debian
# bookworm's clang 14.0.6, and another clang major may emit different bytes.
PROBE_CLANG_MAJOR := 14

TEST_EXTRA += probe-bpf-check

.PHONY: probe-bpf-generate probe-bpf-check

probe-bpf-generate:
	@clang --version | head -1 | grep -q 'version $(PROBE_CLANG_MAJOR)\.' || \
		{ echo "probe: clang $(PROBE_CLANG_MAJOR) needed for a reproducible object, found: $$(clang --version | head -1)"; exit 1; }
	cd probe && $(GO) generate ./...

probe-bpf-check: probe-bpf-generate
	@git diff --exit-code --stat -- 'probe/*_bpfel.go' 'probe/*_bpfel.o' || \
		{ echo "probe: regenerated BPF output differs from the committed one (run make probe-bpf-generate and commit)"; exit 1; }
