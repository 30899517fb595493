package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/deadletter"
)

// looseSchema is a waywo_projects whose columns allow what the backend's
// constraints normally keep out (a NULL title), to show such rows are
// reported, not crashed on.
const looseSchema = `CREATE TABLE waywo_projects (
	id INTEGER PRIMARY KEY, title TEXT, description TEXT, hashtags TEXT,
	description_embedding BLOB, short_description TEXT, idea_score INTEGER, is_valid_project BOOLEAN)`

// Every kind of malformed outside input, across HTTP, NATS and database
// rows, gets its expected status or dead-letter reason, and good input
// keeps flowing meanwhile.
func TestBadInput(t *testing.T) {
	t.Parallel()
	cfg, path := syncConfig(t, nil)
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Exec(looseSchema)
	require.NoError(t, err)
	base, cancel, done := startRun(t, cfg)
	defer func() { cancel(); require.NoError(t, <-done) }()
	waitHealthy(t, base, 30*time.Second)

	t.Run("http", func(t *testing.T) {
		many := `{"documents":[` + strings.Repeat(`"a",`, 99_999) + `"a"]}`
		for _, c := range []struct {
			name, method, path, contentType, body string
			status                                int
			message                               string
		}{
			{"bad JSON", "POST", "/embed", "application/json", `{"documents": [`, 400, "invalid JSON"},
			{"not an object", "POST", "/embed", "application/json", `["a"]`, 400, "must be a JSON object"},
			{"no documents", "POST", "/embed", "application/json", `{}`, 400, "is required: a non-empty array of strings"},
			{"documents null", "POST", "/embed", "application/json", `{"documents": null}`, 400, "is required: a non-empty array of strings"},
			{"documents a string", "POST", "/embed", "application/json", `{"documents": "a"}`, 400, "must be an array of strings"},
			{"documents empty", "POST", "/embed", "application/json", `{"documents": []}`, 400, "must not be empty"},
			{"a number", "POST", "/embed", "application/json", `{"documents": [1]}`, 400, "documents[0] must be a string"},
			{"a null", "POST", "/embed", "application/json", `{"documents": ["a", null]}`, 400, "documents[1] must be a string"},
			{"an object", "POST", "/embed", "application/json", `{"documents": [{"text":"a"}]}`, 400, "documents[0] must be a string"},
			{"empty string", "POST", "/embed", "application/json", `{"documents": [""]}`, 400, "documents[0] is empty"},
			{"whitespace only", "POST", "/embed", "application/json", `{"documents": [" \n\t"]}`, 400, "documents[0] is empty"},
			{"invalid UTF-8", "POST", "/embed", "application/json", "{\"documents\": [\"a\xffb\"]}", 400, "not valid UTF-8"},
			{"NUL byte", "POST", "/embed", "application/json", `{"documents": ["a\u0000b"]}`, 400, "NUL"},
			{"100,000 documents", "POST", "/embed", "application/json", many, 413, "EMBED_MAX_DOCUMENTS"},
			{"11 MB document", "POST", "/embed", "application/json", `{"documents": ["` + strings.Repeat("x", 11<<20) + `"]}`, 413, "EMBED_MAX_BODY_BYTES"},
			{"200 KB document", "POST", "/embed", "application/json", `{"documents": ["` + strings.Repeat("x", 200<<10) + `"]}`, 413, "EMBED_MAX_DOCUMENT_BYTES"},
			{"wrong content type", "POST", "/embed", "text/plain", `{"documents": ["a"]}`, 415, "application/json"},
			{"bad input_type", "POST", "/embed", "application/json", `{"documents": ["a"], "input_type": "passage"}`, 400, "input_type"},
			{"trailing garbage", "POST", "/embed", "application/json", `{"documents": ["a"]} {"x"`, 400, ""},
			{"unknown fields are ignored", "POST", "/embed", "application/json", `{"documents": ["a"], "normalize": true}`, 200, ""},
			{"openai input a number", "POST", "/v1/embeddings", "application/json", `{"model": "` + cfg.Model + `", "input": 5}`, 400, "input"},
			{"openai other model", "POST", "/v1/embeddings", "application/json", `{"model": "gpt-4", "input": "a"}`, 404, "gpt-4"},
			{"project id not a number", "POST", "/projects/abc/changed", "", "", 400, "positive integer"},
			{"project id negative", "POST", "/projects/-3/changed", "", "", 400, "positive integer"},
			{"project id too big", "POST", "/projects/99999999999999999999/changed", "", "", 400, "positive integer"},
			{"wrong method", "GET", "/embed", "", "", 405, "POST"},
			{"unknown route", "POST", "/embeddings", "application/json", `{}`, 404, "no route"},
		} {
			t.Run(c.name, func(t *testing.T) {
				req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
				require.NoError(t, err)
				if c.contentType != "" {
					req.Header.Set("Content-Type", c.contentType)
				}
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				require.Equal(t, c.status, resp.StatusCode, "%s", body)
				require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				require.Contains(t, string(body), c.message)
				if c.status != 200 {
					var e map[string]any
					require.NoError(t, json.Unmarshal(body, &e), "errors are JSON")
				}
			})
		}
	})

	// Events come from a publisher, as the backend's (no credentials: the
	// embedded server's publisher role); dead letters are read as the api.
	nc, err := nats.Connect("nats://" + cfg.NATSAddr)
	require.NoError(t, err)
	defer nc.Close()
	pub, err := jetstream.New(nc)
	require.NoError(t, err)
	_, js := apiConn(t, cfg)
	insert := func(id int, title, description, hashtags any) {
		_, err := raw.Exec("INSERT INTO waywo_projects (id, title, description, hashtags) VALUES (?, ?, ?, ?)", id, title, description, hashtags)
		require.NoError(t, err)
	}
	publish := func(subject string, body []byte) error {
		_, err := pub.Publish(context.Background(), subject, body)
		return err
	}

	// Good rows before, between and after the bad ones keep flowing.
	insert(1, "Good", "a fine project", `["go"]`)
	insert(2, "Garbage body", "the event's body is ignored", `[]`)
	insert(10, "Tags not JSON", "d", `rust, go`)
	insert(11, "Tags an object", "d", `{"tags": ["a"]}`)
	insert(12, "Tags of numbers", "d", `[1, 2]`)
	insert(13, nil, "no title", `[]`)
	insert(14, "T", nil, `[]`)
	insert(15, "Huge", strings.Repeat("word ", 1<<20), `[]`)
	insert(16, " ", "\n", `[]`)
	_, err = raw.Exec("INSERT INTO waywo_projects (id, title, description, hashtags) VALUES (17, 'Bad bytes', CAST(x'61ff62' AS TEXT), '[]')")
	require.NoError(t, err)
	insert(18, "NUL", "a\x00b", `[]`)
	_, err = raw.Exec("INSERT INTO waywo_projects (id, title, description, hashtags, description_embedding) VALUES (19, 'Wrong blob', 'd', '[]', x'0102')")
	require.NoError(t, err)
	insert(20, "Good too", "another fine project", `[]`)

	wantDead := map[string]string{
		"waywo.projects.changed.abc": "bad event: project id must be a positive integer",
		"waywo.projects.changed.-5":  "bad event: project id must be a positive integer",
		"waywo.projects.changed.0":   "bad event: project id must be a positive integer",
		"waywo.projects.changed.007": "bad event: project id must be a positive integer",
		"waywo.projects.changed.10":  "hashtags is not a JSON array of strings",
		"waywo.projects.changed.11":  "hashtags is not a JSON array of strings",
		"waywo.projects.changed.12":  "element 0 is",
		"waywo.projects.changed.13":  "title is NULL",
		"waywo.projects.changed.14":  "description is NULL",
		"waywo.projects.changed.15":  "over the limit of 131072 (EMBED_MAX_DOCUMENT_BYTES)",
		"waywo.projects.changed.16":  "text is empty",
		"waywo.projects.changed.17":  "not valid UTF-8",
		"waywo.projects.changed.18":  "NUL",
	}
	t.Run("nats and rows", func(t *testing.T) {
		for _, s := range []string{"abc", "-5", "0", "007"} {
			require.NoError(t, publish("waywo.projects.changed."+s, nil))
		}
		require.NoError(t, publish("waywo.projects.changed.1", nil))
		require.NoError(t, publish("waywo.projects.changed.2", []byte("\x00\xff garbage {")))
		for id := 10; id <= 20; id++ {
			require.NoError(t, publish(fmt.Sprintf("waywo.projects.changed.%d", id), nil))
		}
		require.NoError(t, publish("waywo.projects.changed.999", nil)) // no such project: acked, no dead letter
		// Oversize: refused by the stream at publish, nothing stored.
		err := publish("waywo.projects.changed.1", bytes.Repeat([]byte("x"), 100<<10))
		require.Error(t, err)
		require.Contains(t, err.Error(), "maximum")
		// Not even a subject the publisher may use: the server refuses it.
		require.NoError(t, nc.Publish("waywo.projects.changed.1.extra", nil))

		var dls []deadletter.Stored
		require.Eventually(t, func() bool {
			dls, err = deadletter.List(context.Background(), js, "projects", 100)
			return err == nil && len(dls) >= len(wantDead)
		}, 60*time.Second, 20*time.Millisecond)
		got := map[string]string{}
		for _, d := range dls {
			got[d.Subject] = d.Reason
		}
		require.Len(t, got, len(wantDead), "%v", got)
		for subject, reason := range wantDead {
			require.Contains(t, got[subject], reason, subject)
		}
		for _, id := range []int{1, 2, 19, 20} {
			require.Eventually(t, func() bool { return hasBlob(t, path, id, cfg.Dimensions) }, 30*time.Second, 20*time.Millisecond, "project %d", id)
		}

		// sync-status names every failed row with its reason.
		resp, err := http.Get(base + "/projects/sync-status")
		require.NoError(t, err)
		defer resp.Body.Close()
		var st struct {
			Failed   int
			Failures []struct {
				ID     int
				Reason string
			} `json:"failed_projects"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
		require.Equal(t, 9, st.Failed)
		require.Len(t, st.Failures, 9)
		require.Equal(t, 10, st.Failures[0].ID)

		// And /metrics counts them.
		mresp, err := http.Get(base + "/metrics")
		require.NoError(t, err)
		defer mresp.Body.Close()
		metrics, _ := io.ReadAll(mresp.Body)
		require.Contains(t, string(metrics), fmt.Sprintf("embed_sync_dead_letters_total %d\n", len(wantDead)))
		require.Contains(t, string(metrics), `embed_sync_projects_total{outcome="failed"} 9`)
		require.Regexp(t, `embed_sync_projects_total\{outcome="embedded"\} [1-9]`, string(metrics))
		require.Contains(t, string(metrics), "embed_sync_events_pending 0")
		require.Contains(t, string(metrics), `embed_sync_reconcile_rounds_total{result="ok"} 1`)
	})
	t.Logf("%d bad-input cases", 27+len(wantDead)+3)
}
