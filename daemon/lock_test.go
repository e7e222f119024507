package daemon

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestInstanceLockRefusesASecondHolderAndNamesTheFirst(t *testing.T) {
	dir := t.TempDir()
	first, err := acquireInstanceLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock conflicts between open file descriptions, so a second open in
	// this process stands for a second daemon.
	_, err = acquireInstanceLock(dir)
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second lock: err = %v, want ErrAlreadyRunning naming pid %d", err, os.Getpid())
	}
	first.release()
	again, err := acquireInstanceLock(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.release()
}
