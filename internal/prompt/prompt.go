// Package prompt builds the texts the model is given: a WAYWO project's
// text exactly as the backend builds it, a search query with nemotron's
// instruction, and whether a text has anything to embed at all. The api's
// request checks, the sync, the worker and the public client share it.
package prompt

import (
	"strings"
	"unicode"
)

// ProjectText builds a WAYWO project's text exactly as the backend does:
// f"{title}\n{description}\n{hashtag_str}".strip(), where hashtag_str is
// the tags as "#tag" joined by single spaces (empty when there are none).
func ProjectText(title, description string, hashtags []string) string {
	tags := make([]string, len(hashtags))
	for i, t := range hashtags {
		tags[i] = "#" + t
	}
	return pyStrip(title + "\n" + description + "\n" + strings.Join(tags, " "))
}

// pyStrip trims what Python's str.strip() trims: Go's Unicode spaces plus
// the ASCII separators U+001C..U+001F, which Python counts as whitespace.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
	})
}

// Blank says whether s has nothing to embed: only white space, control
// characters or invisible format characters (zero-width spaces and joiners,
// byte order marks). The model would return a vector of nothing for it.
func Blank(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool {
		return !unicode.IsSpace(r) && !unicode.IsControl(r) && !unicode.Is(unicode.Cf, r)
	}) < 0
}

// Query is how nemotron wants a query: an instruction naming the task,
// then the query. Documents go to the model unchanged.
func Query(task, text string) string {
	return "Instruct: " + task + "\nQuery: " + text
}
