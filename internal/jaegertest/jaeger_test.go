package jaegertest

import (
	"os"
	"testing"
)

// The binary builds (or is there already): .ci/run runs this alone before
// the test command, so that a first build does not share the cores with
// timing-sensitive suites.
func TestBinary(t *testing.T) {
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Jaeger is required under CI=true: %v", err)
		}
		t.Skipf("Jaeger unavailable: %v", err)
	}
	fi, err := os.Stat(bin)
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is not an executable: %v", bin, err)
	}
}
