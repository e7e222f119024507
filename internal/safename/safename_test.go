package safename

import "testing"

func TestCheck(t *testing.T) {
	for _, ok := range []string{"dp0", "taichi", "taichi.test1234", "k123-dp", "pmd_0", "user@1000.service"} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q) = %v, want nil", ok, err)
		}
	}
	long := make([]byte, MaxLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", ".", "..", "../../x", "a/b", "/abs", "-flag", ".hidden", "a b", "a\nb", "a\x00b", string(long)} {
		if err := Check(bad); err == nil {
			t.Errorf("Check(%q) = nil, want an error", bad)
		}
	}
}

func TestIface(t *testing.T) {
	for _, ok := range []string{"eth0", "veth-dp1", "a", "enp0s31f6.100", "123456789012345"} {
		if err := Iface(ok); err != nil {
			t.Errorf("Iface(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "eth0:1", "a b", "a\tb", "a\nb", "a\x00b", "1234567890123456"} {
		if err := Iface(bad); err == nil {
			t.Errorf("Iface(%q) = nil, want an error", bad)
		}
	}
}
