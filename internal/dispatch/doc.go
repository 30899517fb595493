// Package dispatch is the api's side of the job queue: it ensures the
// jobs streams, cuts a request into jobs that fit NATS's payload both
// ways, publishes them to their lane, waits for the workers' replies on
// one inbox, tells workers when a requester stopped waiting (embed.cancel),
// and tracks from their heartbeats which workers are alive and ready and
// which model fingerprint they serve.
package dispatch
