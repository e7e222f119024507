package eval

import (
	"context"

	"github.com/taichi-sched/taichi/testbed"
)

// newTraffic returns the generator driving the testbed's DP loop and the
// loop's measured capacity in packets per second.
func newTraffic(ctx context.Context, tb *testbed.Testbed) (Traffic, int, error) {
	return nil, 0, nil
}
