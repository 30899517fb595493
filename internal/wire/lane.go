package wire

import "fmt"

// Lane is a priority class of jobs, each with its own stream, consumer and
// limits. Workers take interactive jobs first and top batches up with bulk
// ones; a full bulk lane refuses bulk work only.
type Lane string

const (
	// LaneInteractive: /embed, /v1/embeddings, search queries. The default.
	LaneInteractive Lane = "interactive"
	// LaneBulk: the project sync, the reconcile, reindex, and callers who
	// ask for it.
	LaneBulk Lane = "bulk"
)

// Lanes lists the lanes, interactive first.
var Lanes = []Lane{LaneInteractive, LaneBulk}

// ParseLane reads a lane name; empty is interactive.
func ParseLane(s string) (Lane, error) {
	switch Lane(s) {
	case "", LaneInteractive:
		return LaneInteractive, nil
	case LaneBulk:
		return LaneBulk, nil
	}
	return "", fmt.Errorf("priority must be %q or %q, got %q", LaneInteractive, LaneBulk, s)
}

// Stream, Subject and Consumer are the lane's names on the wire.
func (l Lane) Stream() string {
	if l == LaneBulk {
		return BulkJobsStream
	}
	return JobsStream
}

func (l Lane) Subject() string {
	if l == LaneBulk {
		return BulkJobsSubject
	}
	return JobsSubject
}

func (l Lane) Consumer() string {
	if l == LaneBulk {
		return BulkWorkersConsumer
	}
	return WorkersConsumer
}

// BulkJobDocuments is the most documents in one bulk job: bulk requests
// are cut this fine so that a worker serving interactive traffic can send
// a short bulk batch (one job) after which a query waits little.
const BulkJobDocuments = 8
