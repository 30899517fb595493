package wire

import (
	"time"

	"github.com/waywo/embed/internal/vector"
)

// Heartbeat is what a worker announces on HeartbeatSubject every interval,
// on a ping, and once more with Stopping set when it leaves.
type Heartbeat struct {
	ID        string        `json:"id"`
	Model     string        `json:"model"`
	Dims      int           `json:"dimensions"`
	Ready     bool          `json:"ready"`            // at least one endpoint can embed now
	Reason    string        `json:"reason,omitempty"` // why not, when not ready
	Endpoints []string      `json:"endpoints"`
	Busy      int           `json:"busy"` // model calls in flight now
	TTL       time.Duration `json:"ttl"`  // count the worker gone if nothing follows within this
	Stopping  bool          `json:"stopping,omitempty"`
	// Fingerprint is the model's in the first ready endpoint: the vector
	// space this worker's answers are in.
	Fingerprint vector.Fingerprint `json:"fingerprint"`
}
