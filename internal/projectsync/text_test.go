package projectsync

import (
	"database/sql"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/db"
)

func row(title, description, hashtags *string) db.Project {
	ns := func(p *string) sql.NullString {
		if p == nil {
			return sql.NullString{}
		}
		return sql.NullString{String: *p, Valid: true}
	}
	return db.Project{ID: 1, Title: ns(title), Description: ns(description), Hashtags: ns(hashtags)}
}

func ptr(s string) *string { return &s }

// Text is the backend's f"{title}\n{description}\n{hashtag_str}".strip()
// for good rows and a reason for every kind of bad one.
func TestText(t *testing.T) {
	for _, c := range []struct {
		name              string
		title, desc, tags *string
		want, wantErr     string
	}{
		{"plain", ptr("T"), ptr("D"), ptr(`["a","b c"]`), "T\nD\n#a #b c", ""},
		{"no tags", ptr("T"), ptr("D"), ptr(`[]`), "T\nD", ""},
		{"NULL tags read as none", ptr("T"), ptr("D"), nil, "T\nD", ""},
		{"strip both ends", ptr(" \tT"), ptr("D\n"), ptr(` [] `), "T\nD", ""},
		{"empty title kept inside", ptr(""), ptr("D"), ptr(`["x"]`), "D\n#x", ""},
		{"unicode", ptr("Café"), ptr("naïve ☕"), ptr(`["日本"]`), "Café\nnaïve ☕\n#日本", ""},
		{"NULL title", nil, ptr("D"), ptr(`[]`), "", "title is NULL"},
		{"NULL description", ptr("T"), nil, ptr(`[]`), "", "description is NULL"},
		{"tags not JSON", ptr("T"), ptr("D"), ptr(`rust, go`), "", "hashtags is not a JSON array of strings"},
		{"tags an object", ptr("T"), ptr("D"), ptr(`{"a":1}`), "", "hashtags is not a JSON array of strings"},
		{"tags JSON null", ptr("T"), ptr("D"), ptr(`null`), "", "hashtags is not a JSON array of strings"},
		{"tags a string", ptr("T"), ptr("D"), ptr(`"rust"`), "", "hashtags is not a JSON array of strings"},
		{"tags with a number", ptr("T"), ptr("D"), ptr(`["a", 2]`), "", "element 1 is \"2\""},
		{"tags with null", ptr("T"), ptr("D"), ptr(`["a", null]`), "", "element 1 is \"null\""},
		{"tags truncated", ptr("T"), ptr("D"), ptr(`["a"`), "", "hashtags is not a JSON array of strings"},
		{"blank", ptr(" "), ptr("\n"), ptr(`[]`), "", "text is empty"},
		{"only zero-width and control characters", ptr("\u200b\u200d"), ptr("\u0007"), ptr(`[]`), "", "text is empty"},
		{"NUL", ptr("T"), ptr("a\x00b"), ptr(`[]`), "", "NUL"},
		{"invalid UTF-8", ptr("T"), ptr("a\xffb"), ptr(`[]`), "", "not valid UTF-8"},
		{"too long", ptr("T"), ptr(strings.Repeat("x", 200)), ptr(`[]`), "", "over the limit of 100"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Text(row(c.title, c.desc, c.tags), 100)
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

// Rows that cannot be built still get a stable key that changes with them.
func TestContentKey(t *testing.T) {
	bad := row(ptr("T"), ptr("D"), ptr("nope"))
	_, err := Text(bad, 0)
	require.Error(t, err)
	k1 := contentKey(bad, "", err)
	require.Equal(t, k1, contentKey(bad, "", err))
	require.True(t, strings.HasPrefix(k1, "raw:"))
	bad2 := row(ptr("T"), ptr("D2"), ptr("nope"))
	require.NotEqual(t, k1, contentKey(bad2, "", err))
	// NULL and empty differ.
	require.NotEqual(t, contentKey(row(nil, ptr(""), nil), "", err), contentKey(row(ptr(""), ptr(""), nil), "", err))
	// Good rows are keyed by their text: reformatted tags JSON is no change.
	a := row(ptr("T"), ptr("D"), ptr(`["x","y"]`))
	b := row(ptr("T"), ptr("D"), ptr(`[ "x", "y" ]`))
	ta, _ := Text(a, 0)
	tb, _ := Text(b, 0)
	require.Equal(t, contentKey(a, ta, nil), contentKey(b, tb, nil))
}

// FuzzText: any row, however broken, yields a text that is valid, non-empty,
// NUL-free and within the limit, or an error; never a panic.
func FuzzText(f *testing.F) {
	f.Add("T", "D", `["a","b"]`, true)
	f.Add("", " ", `[]`, true)
	f.Add("T", "D", `[1, null, {"a":2}]`, true)
	f.Add("T", "D", `["\u0000"]`, true)
	f.Add("T", "D", "[\"\xff\"]", true)
	f.Add("T", "D", ``, false)
	f.Fuzz(func(t *testing.T, title, description, hashtags string, tagsValid bool) {
		p := row(&title, &description, nil)
		if tagsValid {
			p = row(&title, &description, &hashtags)
		}
		text, err := Text(p, 1000)
		key := contentKey(p, text, err)
		if err != nil {
			if !strings.HasPrefix(key, "raw:") {
				t.Fatalf("key %q of a row with no text", key)
			}
			return
		}
		if text == "" || len(text) > 1000 || strings.IndexByte(text, 0) >= 0 || !utf8.ValidString(text) {
			t.Fatalf("bad text %q accepted", text)
		}
		if strings.TrimSpace(text) != text && strings.TrimFunc(text, unicode.IsSpace) != text {
			t.Fatalf("text %q not stripped", text)
		}
	})
}
