package scheduler

// PolicyDynamic lends on every idle poll and leaves reclaiming to the
// packet itself: no probe, no admission, no guard.
const PolicyDynamic PolicyName = "dynamic"

func init() { registerPolicy(1, dynamicPolicy{}) }

type dynamicPolicy struct{}

func (dynamicPolicy) Name() PolicyName       { return PolicyDynamic }
func (dynamicPolicy) UsesProbe() bool        { return false }
func (dynamicPolicy) ConfinesBlockers() bool { return false }
func (dynamicPolicy) LendsDPDK() bool        { return true }
func (dynamicPolicy) newCore(env CoreEnv) CorePolicy {
	return fixedCore{Plan{InCPUSet: true, YieldAfter: 1, Slice: env.Params.DynamicSlice}}
}
