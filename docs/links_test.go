// Package docs holds the documentation; its test checks that every
// relative link and #anchor in README.md and docs/*.md resolves.
package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// link is a Markdown link or image: [text](target), target up to a space
// or the closing parenthesis.
var link = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

func TestLinksResolve(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("..", "README.md"))
	anchors := map[string]map[string]bool{} // file → its anchors
	for _, f := range files {
		for _, l := range links(t, f) {
			target, anchor, _ := strings.Cut(l.target, "#")
			path := f
			if target != "" {
				path = filepath.Join(filepath.Dir(f), target)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s:%d: link to %s: %v", f, l.line, l.target, err)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(path, ".md") {
				t.Errorf("%s:%d: anchor #%s into %s, which is not Markdown", f, l.line, anchor, path)
				continue
			}
			if anchors[path] == nil {
				anchors[path] = headings(t, path)
			}
			if !anchors[path][anchor] {
				t.Errorf("%s:%d: link to %s: no heading makes the anchor #%s there", f, l.line, l.target, anchor)
			}
		}
	}
}

type mdLink struct {
	target string
	line   int
}

// links lists the relative links of a Markdown file, outside code blocks.
func links(t *testing.T, path string) []mdLink {
	t.Helper()
	var out []mdLink
	eachLine(t, path, func(n int, line string) {
		for _, m := range link.FindAllStringSubmatch(stripCode(line), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			out = append(out, mdLink{target, n})
		}
	})
	return out
}

// headings are the anchors GitHub makes of a file's headings: lower case,
// punctuation dropped, spaces made hyphens, repeats numbered.
func headings(t *testing.T, path string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	seen := map[string]int{}
	eachLine(t, path, func(_ int, line string) {
		h, ok := strings.CutPrefix(line, "#")
		if !ok {
			return
		}
		h = strings.TrimLeft(h, "#")
		if !strings.HasPrefix(h, " ") {
			return
		}
		a := anchor(h)
		if n := seen[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	})
	return out
}

func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// eachLine calls fn for every line outside fenced code blocks.
func eachLine(t *testing.T, path string, fn func(n int, line string)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	fenced := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			fn(n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// stripCode blanks inline code spans, where brackets are not links.
func stripCode(line string) string {
	parts := strings.Split(line, "`")
	for i := 1; i < len(parts); i += 2 {
		parts[i] = ""
	}
	return strings.Join(parts, "`")
}

func TestAnchor(t *testing.T) {
	for h, want := range map[string]string{
		" Two lanes: interactive and bulk":           "two-lanes-interactive-and-bulk",
		" `POST /embed`":                             "post-embed",
		" The model: `api model install`":            "the-model-api-model-install",
		" `POST /v1/embeddings` (OpenAI-compatible)": "post-v1embeddings-openai-compatible",
	} {
		if got := anchor(h); got != want {
			t.Errorf("anchor(%q) = %q, want %q", h, got, want)
		}
	}
}
