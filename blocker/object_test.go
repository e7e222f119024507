package blocker

import (
	"testing"

	"github.com/taichi-sched/taichi/internal/bpfcheck"
)

// TestBPFObjects checks the committed tracer object of this architecture
// (amd64 natively, arm64 in the qemu-user pass) without a kernel.
func TestBPFObjects(t *testing.T) {
	bpfcheck.Object(t, "tracer", loadTracer, &tracerSpecs{})
}
