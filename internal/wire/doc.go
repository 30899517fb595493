// Package wire is what travels on NATS between the api, the workers and
// the WAYWO backend, declared once: the names of the jobs streams, their
// consumers and subjects, the lanes, the job and reply envelopes (headers
// plus binary bodies), workers' heartbeats, cancels, and the subject of a
// project-changed event with its id. Changing a name here is a breaking
// change for running fleets. It depends on nothing of ours but the vector
// encoding.
package wire
