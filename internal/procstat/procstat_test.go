package procstat

import (
	"os"
	"testing"
)

func TestBytesOfThisProcess(t *testing.T) {
	self, err := Bytes(0, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	byPID, err := Bytes(os.Getpid(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if self <= 0 || byPID < self {
		t.Fatalf("VmRSS %d, VmHWM %d", self, byPID)
	}
	if _, err := Bytes(0, "NoSuchField"); err == nil {
		t.Fatal("a missing field was read")
	}
}
