# taichi: the two commands a fresh machine needs are `make demo` and `make test`
# (run as root: cgroups, network namespaces, BPF and SCHED_FIFO need it).
GO      ?= go
BIN     := bin/taichi
PKGS    := ./...

.PHONY: all build deps demo test test-unit check-fmt vet arm64 clean

# Feature makefiles (mk/*.mk) add their own checks to TEST_EXTRA, e.g. the
# kernel module's qemu boot test and the BPF regenerate-and-diff check.
TEST_EXTRA :=
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
	$(GO) test -race -p 1 -count=1 -timeout 30m $(PKGS)

test: deps build check-fmt vet arm64 test-unit $(TEST_EXTRA)

clean:
	rm -rf bin
