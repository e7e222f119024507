package scheduler

// PolicyStatic is today's practice: DP cores are never lent.
const PolicyStatic PolicyName = "static"

func init() { registerPolicy(0, staticPolicy{}) }

type staticPolicy struct{}

func (staticPolicy) Name() PolicyName       { return PolicyStatic }
func (staticPolicy) UsesProbe() bool        { return false }
func (staticPolicy) ConfinesBlockers() bool { return false }
func (staticPolicy) LendsDPDK() bool        { return false }
func (staticPolicy) newCore(env CoreEnv) CorePolicy {
	return fixedCore{heldPlan(env.Params.SliceMin, HoldPolicy)}
}
