package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/waywo/embed/internal/db"
	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
	"github.com/waywo/embed/internal/prompt"
)

// reindex runs `api reindex` as a process over 1,000 projects twice: cold,
// then with nothing changed. Model calls are counted at the Ollama (a
// proxy in front of it), counting only calls carrying a project's text, so
// the worker's warm-up does not count.
func (b *bench) reindex() error {
	const n = 1000
	fmt.Printf("reindex: `api reindex` over %d projects, cold then unchanged\n", n)
	dir := mkdir(b.work, "reindex-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	path := filepath.Join(dir, "waywo.db")
	texts, err := b.writeProjects(path, n)
	if err != nil {
		return err
	}

	counter := &callCounter{texts: texts}
	proxy := counter.proxy(b.ollA)
	defer proxy.Close()
	natsAddr, err := proctest.FreeAddr()
	if err != nil {
		return err
	}
	env := map[string]string{
		"WAYWO_DB": path, "EMBED_DATA_DIR": mkdir(dir, "data"), "EMBED_NATS_ADDR": natsAddr,
		"OLLAMA_HOST": proxy.URL, "EMBED_MODEL": b.ollA.Model, "EMBED_DIMENSIONS": strconv.Itoa(b.ollA.Dims),
		"EMBED_LOG_LEVEL": "warn",
	}
	for _, pass := range []struct{ name, args string }{{"cold", ""}, {"unchanged", ""}} {
		calls0, inputs0 := counter.read()
		start := time.Now()
		cmd := exec.CommandContext(b.ctx, filepath.Join(b.work, "api"), "reindex")
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil {
			return fmt.Errorf("api reindex (%s): %w\n%s", pass.name, err, out)
		}
		calls, inputs := counter.read()
		calls, inputs = calls-calls0, inputs-inputs0
		fmt.Printf("  %-12s %-44s %8.2f s  model calls %d (inputs %d)\n", "reindex", pass.name+", 1,000 projects", took.Seconds(), calls, inputs)
		b.rep.Extra["reindex_"+pass.name+"_seconds"] = took.Seconds()
		b.rep.Extra["reindex_"+pass.name+"_model_calls"] = float64(calls)
		b.rep.Extra["reindex_"+pass.name+"_model_inputs"] = float64(inputs)
		if pass.name == "unchanged" {
			b.reindexUnchangedCalls = calls
		}
	}
	b.reindexDone = true
	return nil
}

// writeProjects creates the WAYWO file at path with n projects of the
// corpus's texts and returns the texts the sync embeds for them.
func (b *bench) writeProjects(path string, n int) (map[string]bool, error) {
	store, err := db.Open(b.ctx, path, zap.NewNop())
	if err != nil {
		return nil, err
	}
	store.Close()
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	tx, err := raw.Begin()
	if err != nil {
		return nil, err
	}
	tags := []string{"waywo", "bench"}
	texts := make(map[string]bool, n)
	for id := 1; id <= n; id++ {
		title, desc := fmt.Sprintf("Project %d", id), b.c.texts[id%len(b.c.texts)]
		if _, err := tx.Exec(db.InsertProject, id, title, desc, `["waywo","bench"]`); err != nil {
			_ = tx.Rollback()
			return nil, err
		}
		texts[prompt.ProjectText(title, desc, tags)] = true
	}
	return texts, tx.Commit()
}

// callCounter counts /api/embed calls that carry any of texts.
type callCounter struct {
	texts         map[string]bool
	mu            sync.Mutex
	calls, inputs int
}

func (c *callCounter) read() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.inputs
}

func (c *callCounter) proxy(o *ollamatest.Server) *httptest.Server {
	target, _ := url.Parse(o.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/embed" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct {
				Input json.RawMessage `json:"input"`
			}
			_ = json.Unmarshal(body, &req)
			var inputs []string
			if json.Unmarshal(req.Input, &inputs) != nil {
				var one string
				if json.Unmarshal(req.Input, &one) == nil {
					inputs = []string{one}
				}
			}
			ours := 0
			for _, in := range inputs {
				if c.texts[in] {
					ours++
				}
			}
			if ours > 0 {
				c.mu.Lock()
				c.calls++
				c.inputs += ours
				c.mu.Unlock()
			}
		}
		rp.ServeHTTP(w, r)
	}))
}
