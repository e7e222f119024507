package daemon

// Version is the release this binary was built from. Release builds set it
// with the linker (scripts/build-deb.sh):
//
//	go build -ldflags "-X github.com/taichi-sched/taichi/daemon.Version=$(git describe --tags --always --dirty)"
//
// Empty in a plain `go build`: the module version from the build info, or
// "dev", is reported instead.
var Version string

// BuildVersion is the version status, metrics (taichi_build_info) and
// `taichi --version` report.
func BuildVersion() string { return buildVersion() }
