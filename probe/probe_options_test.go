package probe

import (
	"os"
	"testing"
)

// The xdp probe's ring is never smaller than a page (a 64 KiB-page kernel
// refuses a 4 KiB ring buffer), keeps a larger power of two as given, and
// Validate rejects a size that is not a power of two, naming the field.
func TestRingBytesAtLeastAPage(t *testing.T) {
	page := os.Getpagesize()
	for _, c := range []struct{ size, want int }{
		{0, max(DefaultRingSize, page)},
		{page / 2, page},
		{page, page},
		{4 * page, 4 * page},
	} {
		if got := (Options{RingSize: c.size}).RingBytes(); got != c.want {
			t.Errorf("RingSize %d: RingBytes %d, want %d", c.size, got, c.want)
		}
	}
	err := Options{Iface: "eth0", RingSize: 5000}.Validate()
	if err == nil || err.Error() != "ring_size: 5000 is not a power of two" {
		t.Fatalf("RingSize 5000: %v", err)
	}
	if err := (Options{Iface: "eth0", RingSize: 8192}).Validate(); err != nil {
		t.Fatalf("RingSize 8192: %v", err)
	}
}
