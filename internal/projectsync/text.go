// A project's text as the WAYWO backend builds it, and the content key the
// sync records for it.

package projectsync

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/prompt"
)

// Text builds a project's text exactly as the WAYWO backend does,
// f"{title}\n{description}\n{hashtag_str}".strip(), after checking the row:
// title and description present, hashtags a JSON array of strings (NULL
// reads as none, as the backend's get_hashtags_list does), valid UTF-8 with
// no NUL, not empty, at most maxBytes.
func Text(p db.Project, maxBytes int) (string, error) {
	if !p.Title.Valid {
		return "", errors.New("title is NULL")
	}
	if !p.Description.Valid {
		return "", errors.New("description is NULL")
	}
	var tags []string
	if p.Hashtags.Valid {
		var err error
		if tags, err = parseHashtags(p.Hashtags.String); err != nil {
			return "", err
		}
	}
	text := prompt.ProjectText(p.Title.String, p.Description.String, tags)
	switch {
	case !utf8.ValidString(text):
		return "", errors.New("text is not valid UTF-8")
	case strings.IndexByte(text, 0) >= 0:
		return "", errors.New("text contains a NUL byte")
	case prompt.Blank(text):
		return "", errors.New("text is empty (title, description and hashtags are blank)")
	case maxBytes > 0 && len(text) > maxBytes:
		return "", fmt.Errorf("text is %d bytes, over the limit of %d (EMBED_MAX_DOCUMENT_BYTES)", len(text), maxBytes)
	}
	return text, nil
}

func parseHashtags(raw string) ([]string, error) {
	trimmed := bytes.TrimSpace([]byte(raw))
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, fmt.Errorf("hashtags is not a JSON array of strings: %s", quoteShort(raw))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(trimmed, &items); err != nil {
		return nil, fmt.Errorf("hashtags is not a JSON array of strings: %v", err)
	}
	tags := make([]string, len(items))
	for i, it := range items {
		if err := json.Unmarshal(it, &tags[i]); err != nil || bytes.Equal(it, []byte("null")) {
			return nil, fmt.Errorf("hashtags is not a JSON array of strings: element %d is %s", i, quoteShort(string(it)))
		}
	}
	return tags, nil
}

func quoteShort(s string) string {
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// ContentKey is the content_hash the sync records for a row embedded from
// its current title, description and hashtags.
func ContentKey(p db.Project, maxTextBytes int) string {
	text, err := Text(p, maxTextBytes)
	return contentKey(p, text, err)
}

// contentKey identifies what a row would be embedded from: the hash of its
// text, or, when no text can be built, of its raw columns.
func contentKey(p db.Project, text string, textErr error) string {
	h := sha256.New()
	if textErr == nil {
		h.Write([]byte(text))
		return hex.EncodeToString(h.Sum(nil))
	}
	for _, c := range []struct {
		ok bool
		s  string
	}{{p.Title.Valid, p.Title.String}, {p.Description.Valid, p.Description.String}, {p.Hashtags.Valid, p.Hashtags.String}} {
		if c.ok {
			fmt.Fprintf(h, "%d:%s", len(c.s), c.s)
		} else {
			h.Write([]byte("-"))
		}
	}
	return "raw:" + hex.EncodeToString(h.Sum(nil))
}
