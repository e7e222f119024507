// Package safename is the one check for names that become a single path
// component: a cgroup directory, a DP loop's segment and log files, a named
// network namespace under /run/netns, a DPDK application's name. The config
// and the packages that build the paths call the same function, so the two
// cannot drift apart.
package safename

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// MaxLen is the longest name accepted (a file name's limit, NAME_MAX).
const MaxLen = 255

var pattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]*$`)

// Check returns nil when name is a safe single path component: letters,
// digits, '_', '.', '@', '-', starting with a letter or digit (so never
// "", ".", "..", a path, or something a command line reads as a flag).
func Check(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("must not be empty")
	case len(name) > MaxLen:
		return fmt.Errorf("%q is longer than %d bytes", name, MaxLen)
	case !pattern.MatchString(name):
		return fmt.Errorf("%q is not a single safe path component (use letters, digits, '_', '.', '@', '-'; start with a letter or digit)", name)
	}
	return nil
}

// IfaceNameMax is the longest network interface name (IFNAMSIZ - 1).
const IfaceNameMax = 15

// Iface returns nil when name is a valid network interface name, by the
// kernel's rule (dev_valid_name): 1..15 bytes, not "." or "..", no '/', ':'
// or white space. Interface names become /sys/class/net/NAME.
func Iface(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("interface name must not be empty")
	case len(name) > IfaceNameMax:
		return fmt.Errorf("interface name %q is longer than %d bytes", name, IfaceNameMax)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	case strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == ':' || r == 0 || unicode.IsSpace(r) }):
		return fmt.Errorf("interface name %q contains '/', ':', NUL or white space", name)
	}
	return nil
}
