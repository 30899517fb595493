package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/waywo/embed/internal/queue"
)

// Limits bound what one request may ask for.
type Limits struct {
	MaxDocuments     int
	MaxDocumentBytes int
	MaxBodyBytes     int64
}

// requestError is a client error with the status it deserves.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func tooLarge(format string, a ...any) error {
	return &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf(format, a...)}
}

type embedRequest struct {
	Documents []string
	InputType string
}

// decodeEmbedRequest validates a /embed body: a JSON object whose
// "documents" is a non-empty array of non-empty strings within the limits,
// and whose optional "input_type" is "document" or "query". Unknown fields
// are ignored, as the original FastAPI service did.
func decodeEmbedRequest(body []byte, l Limits) (embedRequest, error) {
	if !utf8.Valid(body) {
		return embedRequest{}, badRequest("body is not valid UTF-8")
	}
	var raw struct {
		Documents json.RawMessage `json:"documents"`
		InputType json.RawMessage `json:"input_type"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field == "" {
			return embedRequest{}, badRequest("body must be a JSON object like {\"documents\": [\"...\"]}, got %s", typeErr.Value)
		}
		return embedRequest{}, badRequest("invalid JSON: %v", err)
	}
	req := embedRequest{InputType: queue.InputDocument}
	if it := bytes.TrimSpace(raw.InputType); len(it) > 0 && string(it) != "null" {
		var s string
		if err := json.Unmarshal(it, &s); err != nil || (s != queue.InputDocument && s != queue.InputQuery) {
			return embedRequest{}, badRequest("input_type must be \"document\" or \"query\", got %s", truncateBytes(it, 40))
		}
		req.InputType = s
	}
	docs := bytes.TrimSpace(raw.Documents)
	if len(docs) == 0 || string(docs) == "null" {
		return embedRequest{}, badRequest("\"documents\" is required: a non-empty array of strings")
	}
	if docs[0] != '[' {
		return embedRequest{}, badRequest("\"documents\" must be an array of strings, got %s", jsonKind(docs))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(docs, &items); err != nil {
		return embedRequest{}, badRequest("\"documents\": %v", err)
	}
	if len(items) == 0 {
		return embedRequest{}, badRequest("\"documents\" must not be empty")
	}
	if len(items) > l.MaxDocuments {
		return embedRequest{}, tooLarge("%d documents; at most %d per request (EMBED_MAX_DOCUMENTS)", len(items), l.MaxDocuments)
	}
	req.Documents = make([]string, len(items))
	for i, it := range items {
		if len(it) == 0 || it[0] != '"' {
			return embedRequest{}, badRequest("documents[%d] must be a string, got %s", i, jsonKind(it))
		}
		var s string
		if err := json.Unmarshal(it, &s); err != nil {
			return embedRequest{}, badRequest("documents[%d]: %v", i, err)
		}
		switch {
		case len(s) > l.MaxDocumentBytes:
			return embedRequest{}, tooLarge("documents[%d] is %d bytes; at most %d per document (EMBED_MAX_DOCUMENT_BYTES)", i, len(s), l.MaxDocumentBytes)
		case strings.TrimSpace(s) == "":
			return embedRequest{}, badRequest("documents[%d] is empty", i)
		case strings.IndexByte(s, 0) >= 0:
			return embedRequest{}, badRequest("documents[%d] contains a NUL character", i)
		}
		req.Documents[i] = s
	}
	return req, nil
}

func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func truncateBytes(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
