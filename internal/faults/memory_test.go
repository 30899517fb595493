package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/ollamatest"
	"github.com/waywo/embed/internal/proctest"
)

// Many concurrent requests of the largest size the limits allow (1,000
// documents, 9 MB bodies, 4096-d vectors as JSON) keep the api's memory
// under EMBED_MAX_INFLIGHT_BYTES plus the overhead its Go memory limit
// allows (192 MiB): each is answered 200 or refused at once with 429, and
// none is lost. Before the bound, 60 such requests took the api from 27 MB
// to 1.6 GB.
func TestInflightMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the api as a process under load for about half a minute")
	}
	ollamatest.Exclusive(t)
	buildBinaries(t)
	const (
		dims      = 4096
		budgetMiB = 160
		clients   = 60
		docs      = 1000
	)
	fake, err := ollamatest.StartFake("fake-4096", dims, 0)
	require.NoError(t, err)
	defer fake.Stop()
	dir := t.TempDir()
	httpAddr := proctest.Addr(t)
	api := startProc(t, dir, "api", "api", map[string]string{
		"EMBED_HTTP_ADDR": httpAddr, "EMBED_NATS_ADDR": proctest.Addr(t), "EMBED_DATA_DIR": filepath.Join(dir, "data"),
		"EMBED_SYNC": "false", "EMBED_CACHE_SIZE": "0", "OLLAMA_HOST": fake.URL, "EMBED_MODEL": "fake-4096",
		"EMBED_DIMENSIONS": strconv.Itoa(dims), "EMBED_MAX_INFLIGHT_BYTES": strconv.Itoa(budgetMiB << 20),
		"EMBED_REQUEST_TIMEOUT": "60s",
	})
	base := "http://" + httpAddr
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}, 60*time.Second, 50*time.Millisecond, "the api never became healthy\n%s", api.Tail(3000))
	idle := api.Usage().PeakRSSMB

	texts := make([]string, docs)
	for i := range texts {
		texts[i] = ollamatest.Sentence(uint64(i), 1500)[:9000]
	}
	body, err := json.Marshal(map[string]any{"documents": texts})
	require.NoError(t, err)
	var ok, refused atomic.Int64
	var mu sync.Mutex
	other := map[string]int{}
	deadline := time.Now().Add(15 * time.Second)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			hc := &http.Client{Timeout: 90 * time.Second}
			for time.Now().Before(deadline) {
				resp, err := hc.Post(base+"/embed", "application/json", bytes.NewReader(body))
				if err != nil {
					mu.Lock()
					other["error: "+err.Error()]++
					mu.Unlock()
					continue
				}
				var out struct {
					Embeddings [][]float32 `json:"embeddings"`
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK && json.Unmarshal(raw, &out) == nil && len(out.Embeddings) == docs && len(out.Embeddings[0]) == dims:
					ok.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" && strings.Contains(string(raw), "EMBED_MAX_INFLIGHT_BYTES"):
					refused.Add(1)
					// As a client honouring Retry-After does, but never past
					// the load's end.
					secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
					<-time.After(min(time.Duration(secs)*time.Second, time.Until(deadline)))
				default:
					mu.Lock()
					other[fmt.Sprintf("%d %.80s", resp.StatusCode, raw)]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	peak := api.Usage().PeakRSSMB
	t.Logf("%d clients x %d documents (%d-byte bodies) for 15 s: %d answered 200, %d refused 429; api RSS %.0f MB idle, peak %.0f MB (budget %d MiB + 192 MiB)",
		clients, docs, len(body), ok.Load(), refused.Load(), idle, peak, budgetMiB)
	require.Empty(t, other, "every request is answered 200 or 429")
	require.Positive(t, ok.Load())
	require.Positive(t, refused.Load(), "the bound was reached")
	// The Go memory limit (budget + 192 MiB) is soft: under this burst of
	// 9 MB bodies the collector lags it for a moment, and RSS also holds
	// memory the runtime does not count. Peaks of 296-365 MB against the
	// 352 MiB limit were seen on this machine, with and without the
	// changes of the day; without the bound the load took 3.2 GB.
	limit := float64(budgetMiB + 192)
	require.Less(t, peak, limit*1.1, "peak RSS within the budget and the stated overhead, give or take the soft limit's lag")
}
