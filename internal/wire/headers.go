package wire

// Headers of job and reply messages. JetStream does not carry a message's
// reply subject to the consumer, so the requester's inbox travels in a header.
const (
	HeaderReply     = "Embed-Reply"
	HeaderRequestID = "Embed-Request-Id"
	HeaderDeadline  = "Embed-Deadline" // unix milliseconds
	HeaderInputType = "Embed-Input-Type"
	HeaderOffset    = "Embed-Offset" // index of the job's first document in its request

	HeaderStatus     = "Embed-Status"
	HeaderError      = "Embed-Error"
	HeaderErrorIndex = "Embed-Error-Index"
	HeaderCount      = "Embed-Count"
	HeaderDims       = "Embed-Dims"
	HeaderTokens     = "Embed-Tokens"
	HeaderWorker     = "Embed-Worker"
	HeaderModel      = "Embed-Model"
	HeaderDigest     = "Embed-Model-Digest"   // the model's digest in the Ollama that computed the vectors
	HeaderOllama     = "Embed-Ollama-Version" // that Ollama's version
)
