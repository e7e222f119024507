package fielderr

import (
	"errors"
	"fmt"
	"testing"
)

func TestSplit(t *testing.T) {
	err := errors.Join(New("cpus[1]", "CPU %d twice", 3), errors.New("plain"),
		errors.Join(fmt.Errorf("wrapped: %w", New("name", "empty")), nil))
	fields, others := Split(err)
	if len(fields) != 2 || fields[0].Key != "cpus[1]" || fields[1].Key != "name" || fields[1].Problem != "empty" {
		t.Fatalf("fields %+v", fields)
	}
	if len(others) != 1 || others[0].Error() != "plain" {
		t.Fatalf("others %v", others)
	}
	if got := fields[0].Error(); got != "cpus[1]: CPU 3 twice" {
		t.Fatalf("Error() = %q", got)
	}
	if f, o := Split(nil); f != nil || o != nil {
		t.Fatal("nil error split into parts")
	}
}
