package wire

// Role is a kind of NATS client of this system. Each may publish and
// subscribe to its own subjects only, so that holding one role's
// credentials grants no more than that role needs: the WAYWO backend's
// publisher cannot read a queued text, forge a reply or delete a stream,
// and a worker cannot announce a project or touch a stream.
type Role string

const (
	// RoleAPI creates the streams and consumers, publishes jobs, reads
	// replies, consumes project events and keeps the dead letters.
	RoleAPI Role = "api"
	// RoleWorker pulls jobs from its lanes' consumers, acknowledges them,
	// publishes replies, heartbeats and dead jobs.
	RoleWorker Role = "worker"
	// RolePublisher announces project changes, as the WAYWO backend does,
	// and receives the acknowledgement of a JetStream publish.
	RolePublisher Role = "publisher"
)

// Roles lists the roles.
var Roles = []Role{RoleAPI, RoleWorker, RolePublisher}

// Permissions are the subjects a role may publish and subscribe to; NATS
// wildcards as the server reads them. Everything else is refused by the
// server.
type Permissions struct {
	Publish, Subscribe []string
}

// jsAPI is the prefix of the JetStream API's subjects.
const jsAPI = "$JS.API."

// Permissions says what r may do. deploy/nats.conf grants the same (a test
// holds them equal).
func (r Role) Permissions() Permissions {
	switch r {
	case RoleAPI:
		return Permissions{
			Publish: []string{
				JobsSubject, BulkJobsSubject, CancelSubject, PingSubject,
				GaveUpPrefix + ".>",
				DeadLetterSubject + ".>",
				ProjectSubjectPrefix + "*",
				jsAPI + ">", // streams, consumers, dead letters
				"$JS.ACK." + ProjectsStream + "." + ProjectsConsumer + ".>",
			},
			Subscribe: []string{
				ReplyPrefix + ".>", GaveUpPrefix + ".>",
				HeartbeatSubject,
				"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>",
				APIInboxPrefix + ".>",
			},
		}
	case RoleWorker:
		p := Permissions{
			Publish: []string{
				ReplyPrefix + ".>",
				HeartbeatSubject,
				DeadLetterSubject + ".jobs",
			},
			Subscribe: []string{PingSubject, CancelSubject, WorkerInboxPrefix + ".>"},
		}
		for _, l := range Lanes {
			s, c := l.Stream(), l.Consumer()
			p.Publish = append(p.Publish,
				jsAPI+"STREAM.INFO."+s,
				jsAPI+"CONSUMER.CREATE."+s+"."+c,
				jsAPI+"CONSUMER.INFO."+s+"."+c,
				jsAPI+"CONSUMER.MSG.NEXT."+s+"."+c,
				"$JS.ACK."+s+"."+c+".>",
			)
		}
		return p
	case RolePublisher:
		// _INBOX is the clients' default inbox prefix, where a JetStream
		// publish's acknowledgement comes back. The api and the workers
		// use inboxes of their own, out of its reach.
		return Permissions{Publish: []string{ProjectSubjectPrefix + "*"}, Subscribe: []string{"_INBOX.>"}}
	}
	return Permissions{}
}

// InboxPrefix is the prefix of r's own inboxes: the api's and the
// workers' are theirs alone; a publisher keeps the default.
func (r Role) InboxPrefix() string {
	switch r {
	case RoleAPI:
		return APIInboxPrefix
	case RoleWorker:
		return WorkerInboxPrefix
	}
	return ""
}
