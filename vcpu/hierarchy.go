package vcpu

// hierarchy is one cgroup layout (v1 or v2) seen from the pool: the pool
// decides what to write, the hierarchy knows which files say it.
type hierarchy interface {
	version() string
	// groupExists reports whether the group is there (in every hierarchy).
	groupExists() bool
	// create makes the group where it is missing, enabling controllers as
	// the layout needs. Idempotent.
	create() error
	// prepare writes what must be set before tasks join (v1 cpuset.mems).
	prepare() error
	// parentCPUs are the CPUs the group's parent allows.
	parentCPUs() ([]int, error)
	// cpusFile is the file the writer thread writes the CPU list to.
	cpusFile() string
	// applyClass sets the scheduling class on the group; perThread reports
	// that the group cannot express it and each thread needs SCHED_IDLE.
	applyClass(class string, weight int) (perThread bool, err error)
	// threadGranular reports whether single threads can be moved (v1).
	threadGranular() bool
	// addProcess moves a whole thread group (tids == nil) or the given
	// threads of it into the group.
	addProcess(pid int, tids []int) error
	// procs lists the thread group ids in the group.
	procs() ([]int, error)
	usage() (Usage, error)
	// destroy moves the group's tasks to the parent and removes the group.
	// Idempotent: a missing group is not an error.
	destroy() error
}
