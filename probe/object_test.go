package probe

import (
	"testing"

	"github.com/taichi-sched/taichi/internal/bpfcheck"
)

// TestBPFObjects checks the embedded BPF objects without a kernel (natively
// and as arm64 under qemu-user): one line per object.
func TestBPFObjects(t *testing.T) {
	bpfcheck.Object(t, "probe", loadProbe, &probeSpecs{})
}
