package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/waywo/embed/embedclient"
	"github.com/waywo/embed/internal/prompt"
	"github.com/waywo/embed/internal/wire"
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

// decodeEmbedRequest validates a /embed body: a JSON object whose
// "documents" is a non-empty array of non-empty strings within the limits,
// and whose optional "input_type" is "document" or "query". Unknown fields
// are ignored, as the original FastAPI service did.
func decodeEmbedRequest(body []byte, l Limits) (embedclient.EmbedRequest, error) {
	if !utf8.Valid(body) {
		return embedclient.EmbedRequest{}, badRequest("body is not valid UTF-8")
	}
	raw, err := decodeObject(body, "{\"documents\": [\"...\"]}")
	if err != nil {
		return embedclient.EmbedRequest{}, err
	}
	var req embedclient.EmbedRequest
	if req.InputType, err = decodeInputType(raw["input_type"]); err != nil {
		return embedclient.EmbedRequest{}, err
	}
	if p := bytes.TrimSpace(raw["priority"]); len(p) > 0 && string(p) != "null" {
		if err := json.Unmarshal(p, &req.Priority); err != nil {
			return embedclient.EmbedRequest{}, badRequest("priority must be \"interactive\" or \"bulk\", got %s", truncateBytes(p, 40))
		}
		if _, err := wire.ParseLane(req.Priority); err != nil {
			return embedclient.EmbedRequest{}, badRequest("%v", err)
		}
	}
	docs := bytes.TrimSpace(raw["documents"])
	if len(docs) == 0 || string(docs) == "null" {
		return embedclient.EmbedRequest{}, badRequest("\"documents\" is required: a non-empty array of strings")
	}
	if docs[0] != '[' {
		return embedclient.EmbedRequest{}, badRequest("\"documents\" must be an array of strings, got %s", jsonKind(docs))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(docs, &items); err != nil {
		return embedclient.EmbedRequest{}, badRequest("\"documents\": %v", err)
	}
	req.Documents, err = decodeTexts(items, "documents", l)
	return req, err
}

// decodeObject reads a JSON object's members by their exact names:
// encoding/json's struct decoding matches keys case-insensitively, so
// {"Documents": …} was read, and "documents" beside "DOCUMENTS" gave the
// last of the two. A repeated key keeps its last value, as JSON parsers do.
func decodeObject(body []byte, example string) (map[string]json.RawMessage, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field == "" {
			return nil, badRequest("body must be a JSON object like %s, got %s", example, typeErr.Value)
		}
		return nil, badRequest("invalid JSON: %v", err)
	}
	if raw == nil { // the body was null
		return nil, badRequest("body must be a JSON object like %s, got null", example)
	}
	return raw, nil
}

// decodeTexts checks each item is a non-empty string without NUL, within
// the limits, and names the first that is not as field[i].
func decodeTexts(items []json.RawMessage, field string, l Limits) ([]string, error) {
	if len(items) == 0 {
		return nil, badRequest("%q must not be empty", field)
	}
	if len(items) > l.MaxDocuments {
		return nil, tooLarge("%d documents; at most %d per request (EMBED_MAX_DOCUMENTS)", len(items), l.MaxDocuments)
	}
	texts := make([]string, len(items))
	for i, it := range items {
		if len(it) == 0 || it[0] != '"' {
			return nil, badRequest("%s[%d] must be a string, got %s", field, i, jsonKind(it))
		}
		var s string
		if err := json.Unmarshal(it, &s); err != nil {
			return nil, badRequest("%s[%d]: %v", field, i, err)
		}
		switch {
		case len(s) > l.MaxDocumentBytes:
			return nil, tooLarge("%s[%d] is %d bytes; at most %d per document (EMBED_MAX_DOCUMENT_BYTES)", field, i, len(s), l.MaxDocumentBytes)
		case prompt.Blank(s):
			return nil, badRequest("%s[%d] is empty (nothing but spaces, control or zero-width characters)", field, i)
		case strings.IndexByte(s, 0) >= 0:
			return nil, badRequest("%s[%d] contains a NUL character", field, i)
		}
		texts[i] = s
	}
	return texts, nil
}

// HeaderPriority asks for a lane on /v1/embeddings (and /embed, where the
// body's "priority" wins): "interactive" (the default) or "bulk".
const HeaderPriority = "X-Priority"

// lane is the request's lane: the body's priority when given, else the
// X-Priority header's, else interactive.
func lane(r *http.Request, body string) (wire.Lane, error) {
	p := body
	if p == "" {
		p = strings.TrimSpace(strings.ToLower(r.Header.Get(HeaderPriority)))
	}
	l, err := wire.ParseLane(p)
	if err != nil {
		return "", badRequest("%v (the %s header or the \"priority\" field)", err, HeaderPriority)
	}
	return l, nil
}

// decodeInputType reads an optional "input_type".
func decodeInputType(raw json.RawMessage) (string, error) {
	it := bytes.TrimSpace(raw)
	if len(it) == 0 || string(it) == "null" {
		return wire.InputDocument, nil
	}
	var s string
	if err := json.Unmarshal(it, &s); err != nil || (s != wire.InputDocument && s != wire.InputQuery) {
		return "", badRequest("input_type must be \"document\" or \"query\", got %s", truncateBytes(it, 40))
	}
	return s, nil
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
