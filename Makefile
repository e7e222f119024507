# taichi: the two commands a fresh machine needs are `make demo` and `make test`
# (run as root: cgroups, network namespaces, BPF and SCHED_FIFO need it).
GO      ?= go
BIN     := bin/taichi
PKGS    := ./...

.PHONY: all build deps demo test test-unit check-fmt vet arm64 clean

# Feature makefiles (mk/*.mk) add their own checks to TEST_EXTRA, e.g. the
# kernel module's qemu boot test and the BPF regenerate-and-diff check.
TEST_EXTRA :=
# Every stage of make test leaves go test -json in TEST_OUT for the summary.
TEST_OUT   := out/test
GOTESTSUM  ?= $(GO) run gotest.tools/gotestsum@v1.13.0
-include mk/*.mk

all: build

build:
	$(GO) build -o $(BIN) ./cmd/taichi

# deps installs what the build and the tests need (Debian packages, Go modules).
deps:
	./scripts/deps.sh
	$(GO) mod download

demo: deps build
	./$(BIN) demo

check-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

arm64:
	GOARCH=arm64 $(GO) build $(PKGS)

# Packages run one at a time (-p 1): privileged tests share the machine's
# cgroups and its DP core and must not overlap.
test-unit:
	@mkdir -p $(TEST_OUT)
	$(GOTESTSUM) --format pkgname --format-hide-empty-pkg --format-icons text --hide-summary skipped --jsonfile $(TEST_OUT)/unit.json \
		-- -race -p 1 -count=1 -timeout 30m $(PKGS)

# make test runs strict (TAICHI_TEST_STRICT=1, internal/testenv): this is
# the machine kind the tests are written for, so a test that would skip for
# want of root, a tool scripts/deps.sh installs, the testbed, the blocker
# tracer or cgroup v1 groups fails instead. Every stage runs (-k and each
# extra check on its own) and the summary closes the run: one line per
# package, every skip with its reason, then "N passed, N failed, N skipped".
test: export TAICHI_TEST_STRICT = 1
test: deps build check-fmt vet arm64
	@rm -rf $(TEST_OUT) && mkdir -p $(TEST_OUT)
	@rc=0; $(MAKE) --no-print-directory test-unit || rc=1; \
	for check in $(TEST_EXTRA); do \
		$(GO) run ./scripts/testsummary -record $$check -out $(TEST_OUT)/$$check.json -- \
			$(MAKE) --no-print-directory $$check || rc=1; \
	done; \
	$(GO) run ./scripts/testsummary $(TEST_OUT)/*.json || rc=1; \
	exit $$rc

clean:
	rm -rf bin
