package backoff

import (
	"testing"
	"time"
)

func TestPolicyDoublesUpToItsCap(t *testing.T) {
	p := Policy{First: 500 * time.Millisecond, Max: 10 * time.Second}
	for attempt, want := range map[int]time.Duration{0: 500 * time.Millisecond, 1: 500 * time.Millisecond, 2: time.Second, 3: 2 * time.Second, 6: 10 * time.Second, 1000: 10 * time.Second} {
		if got := p.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %s, want %s", attempt, got, want)
		}
	}
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	p := Policy{First: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: true}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.Delay(3) // 400 ms before jitter
		if d < 200*time.Millisecond || d > 400*time.Millisecond {
			t.Fatalf("Delay(3) = %s, outside [200ms, 400ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct delays in 1000: not jittered", len(seen))
	}
}
