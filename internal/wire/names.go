package wire

import "strings"

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

	// ProjectsStream holds the project events, subjects
	// ProjectSubjectPrefix+<id>; the api's sync reads them through
	// ProjectsConsumer.
	ProjectsStream   = "WAYWO_PROJECTS"
	ProjectsConsumer = "embed-sync"

	// DeadLetterStream keeps failed jobs and events, subjects
	// DeadLetterSubject.jobs and DeadLetterSubject.projects.
	DeadLetterStream  = "EMBED_DLQ"
	DeadLetterSubject = "embed.dlq"

	// ReplyPrefix starts every reply subject: ReplyPrefix.<api>.<request>.<offset>,
	// where <api> is each api process's own id. Only workers may publish
	// there and only apis may read it (see Permissions).
	ReplyPrefix = "embed.reply"
	// GaveUpPrefix is where an api tells the requester of a job out of
	// attempts that it failed: GaveUpPrefix.<api>.<request>.<offset>, the
	// job's reply subject under this prefix. Only apis publish and read it.
	GaveUpPrefix = "embed.gaveup"

	// Inbox prefixes of the api's and the workers' own request-reply (the
	// JetStream API's answers, publish acknowledgements, pulled jobs), so
	// that each role can read only its own.
	APIInboxPrefix    = "embed.inbox.api"
	WorkerInboxPrefix = "embed.inbox.worker"
)

// GaveUpSubject is where to tell the requester of the job whose reply
// subject is replyTo that it was given up; false for a reply subject not
// under ReplyPrefix.
func GaveUpSubject(replyTo string) (string, bool) {
	if !IsReplySubject(replyTo) {
		return "", false
	}
	return GaveUpPrefix + strings.TrimPrefix(replyTo, ReplyPrefix), true
}

// IsReplySubject says whether s is a subject under ReplyPrefix, the only
// place a worker answers.
func IsReplySubject(s string) bool {
	return strings.HasPrefix(s, ReplyPrefix+".") && ValidSubject(s)
}
