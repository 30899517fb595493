package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/waywo/embed/internal/vector"
)

// openAIRequest is a validated POST /v1/embeddings body.
type openAIRequest struct {
	Inputs    []string
	Base64    bool
	InputType string
}

// decodeOpenAIRequest accepts OpenAI's embeddings request: "input" as a
// string or an array of strings (token arrays are refused), "model" (the
// served model, or absent), "encoding_format" float or base64, and
// "dimensions" only when it equals the model's. "input_type" is our
// extension; "user" is ignored.
func decodeOpenAIRequest(body []byte, model string, dims int, l Limits) (openAIRequest, error) {
	if !utf8.Valid(body) {
		return openAIRequest{}, badRequest("body is not valid UTF-8")
	}
	raw, err := decodeObject(body, "{\"input\": [\"...\"]}")
	if err != nil {
		return openAIRequest{}, err
	}
	var req openAIRequest
	if m := bytes.TrimSpace(raw["model"]); len(m) > 0 && string(m) != "null" {
		var name string
		if err := json.Unmarshal(m, &name); err != nil {
			return req, withParam(badRequest("model must be a string"), "model")
		}
		if name != model {
			return req, withParam(&requestError{http.StatusNotFound, fmt.Sprintf("model %q is not served here; this server serves %q", name, model)}, "model")
		}
	}
	if f := bytes.TrimSpace(raw["encoding_format"]); len(f) > 0 && string(f) != "null" {
		var format string
		_ = json.Unmarshal(f, &format)
		switch format {
		case "float":
		case "base64":
			req.Base64 = true
		default:
			return req, withParam(badRequest("encoding_format must be \"float\" or \"base64\", got %s", truncateBytes(f, 40)), "encoding_format")
		}
	}
	if d := bytes.TrimSpace(raw["dimensions"]); len(d) > 0 && string(d) != "null" {
		n, err := strconv.Atoi(string(d))
		if err != nil || n != dims {
			return req, withParam(badRequest("dimensions must be %d, the model's; got %s (this model cannot shorten its vectors)", dims, truncateBytes(d, 40)), "dimensions")
		}
	}
	if req.InputType, err = decodeInputType(raw["input_type"]); err != nil {
		return req, withParam(err, "input_type")
	}
	in := bytes.TrimSpace(raw["input"])
	var items []json.RawMessage
	switch {
	case len(in) == 0 || string(in) == "null":
		return req, withParam(badRequest("input is required: a string or an array of strings"), "input")
	case in[0] == '"':
		items = []json.RawMessage{in}
	case in[0] == '[':
		if err := json.Unmarshal(in, &items); err != nil {
			return req, withParam(badRequest("input: %v", err), "input")
		}
		for i, it := range items {
			if len(it) > 0 && (it[0] == '[' || (it[0] >= '0' && it[0] <= '9')) {
				return req, withParam(badRequest("input[%d]: token arrays are not supported, send text", i), "input")
			}
		}
	default:
		return req, withParam(badRequest("input must be a string or an array of strings, got %s", jsonKind(in)), "input")
	}
	req.Inputs, err = decodeTexts(items, "input", l)
	return req, withParam(err, "input")
}

// paramError names the request field an OpenAI-style error is about.
type paramError struct {
	error
	param string
}

func (e *paramError) Unwrap() error { return e.error }

func withParam(err error, param string) error {
	if err == nil {
		return nil
	}
	return &paramError{err, param}
}

// openAIModel is OpenAI's model object.
type openAIModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Digest is our extension: the served model's digest in Ollama.
	Digest string `json:"digest,omitempty"`
}

func (s *Server) servedModel() openAIModel {
	m := openAIModel{ID: s.opts.Model, Object: "model", OwnedBy: "waywo-embed"}
	if fp, ok := s.fingerprint(); ok {
		m.Digest = fp.Digest
	}
	return m
}

// handleModels lists the one served model, as OpenAI's GET /v1/models does:
// OpenAI clients and frameworks ask it to check a model exists.
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Object string        `json:"object"`
		Data   []openAIModel `json:"data"`
	}{"list", []openAIModel{s.servedModel()}})
}

// handleModel answers GET /v1/models/{id} for the served model only.
func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != s.opts.Model {
		s.writeOpenAIError(w, r, withParam(&requestError{http.StatusNotFound,
			fmt.Sprintf("model %q is not served here; this server serves %q", id, s.opts.Model)}, "model"))
		return
	}
	writeJSON(w, http.StatusOK, s.servedModel())
}

func (s *Server) handleOpenAI(w http.ResponseWriter, r *http.Request) {
	h, err := s.admitBody(r)
	defer h.release()
	if err != nil {
		s.refuseUnread(w, r, err, s.writeOpenAIError)
		return
	}
	body, err := s.readJSONBody(w, r)
	if err != nil {
		s.writeOpenAIError(w, r, err)
		return
	}
	req, err := decodeOpenAIRequest(body, s.opts.Model, s.opts.Dims, s.opts.Limits)
	if err != nil {
		s.writeOpenAIError(w, r, err)
		return
	}
	if err := s.admitDocuments(h, len(body), len(req.Inputs), true); err != nil {
		s.writeOpenAIError(w, r, err)
		return
	}
	ln, err := lane(r, "")
	if err != nil {
		s.writeOpenAIError(w, r, withParam(err, "priority"))
		return
	}
	res, err := s.embedDocs(r, req.InputType, ln, req.Inputs)
	if err != nil {
		s.writeOpenAIError(w, r, err)
		return
	}
	buf := appendOpenAIResponse(make([]byte, 0, len(res.Vectors)*(s.opts.Dims*12+64)+128), res.Vectors, req.Base64, s.opts.Model, res.Tokens)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	_, _ = w.Write(buf)
}

// appendOpenAIResponse writes OpenAI's embeddings list. With b64 each vector
// is base64 of little-endian float32, as OpenAI's own clients expect.
func appendOpenAIResponse(buf []byte, vecs [][]float32, b64 bool, model string, tokens int) []byte {
	buf = append(buf, `{"object":"list","data":[`...)
	var raw []byte
	for i, v := range vecs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"object":"embedding","index":`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, `,"embedding":`...)
		if b64 {
			raw = vector.Append(raw[:0], v)
			buf = append(buf, '"')
			buf = base64.StdEncoding.AppendEncode(buf, raw)
			buf = append(buf, '"')
		} else {
			buf = appendFloats(buf, v)
		}
		buf = append(buf, '}')
	}
	buf = append(buf, `],"model":`...)
	name, _ := json.Marshal(model)
	buf = append(buf, name...)
	buf = append(buf, `,"usage":{"prompt_tokens":`...)
	buf = strconv.AppendInt(buf, int64(tokens), 10)
	buf = append(buf, `,"total_tokens":`...)
	buf = strconv.AppendInt(buf, int64(tokens), 10)
	return append(buf, "}}"...)
}

type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func (s *Server) writeOpenAIError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := s.logError(r, err)
	var body openAIError
	body.Error.Message = err.Error()
	body.Error.Code = code
	switch status {
	case http.StatusNotFound:
		body.Error.Code = "model_not_found"
	case http.StatusUnauthorized:
		body.Error.Code = "invalid_api_key"
	}
	switch {
	case status == http.StatusTooManyRequests:
		body.Error.Type = "rate_limit_error"
	case status == http.StatusUnauthorized:
		body.Error.Type = "authentication_error"
	case status >= 500:
		body.Error.Type = "server_error"
	default:
		body.Error.Type = "invalid_request_error"
	}
	var pe *paramError
	if errors.As(err, &pe) {
		body.Error.Param = &pe.param
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}
