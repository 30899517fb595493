package wire

// Names on the wire. Changing one is a breaking change for running fleets.
const (
	JobsStream      = "EMBED_JOBS" // the interactive lane
	JobsSubject     = "embed.jobs"
	WorkersConsumer = "embed-workers"

	BulkJobsStream      = "EMBED_JOBS_BULK" // the bulk lane
	BulkJobsSubject     = "embed.jobs.bulk"
	BulkWorkersConsumer = "embed-workers-bulk"

	HeartbeatSubject = "embed.workers.heartbeat"
	PingSubject      = "embed.workers.ping"
	// CancelSubject carries the id of a request whose requester stopped
	// waiting (gone, timed out, or failed by another of its jobs): workers
	// drop its jobs not yet sent to the model. Core NATS, best effort.
	CancelSubject = "embed.cancel"

	// ReplyPrefix starts every reply inbox; each api process adds its own id.
	ReplyPrefix = "_INBOX.embed"
)
