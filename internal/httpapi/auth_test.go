package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/waywo/embed/internal/dispatch"
)

func TestAPIKey(t *testing.T) {
	t.Parallel()
	const key = "s3cret-key"
	core, logs := observer.New(zap.DebugLevel)
	emb := fakeQueue(func(_ context.Context, req dispatch.Request) (dispatch.Result, error) {
		return dispatch.Result{Vectors: [][]float32{{1, 0}}}, nil
	})
	s := New(emb, fixedReadiness{n: 1}, Options{Model: "m", Dims: 2, Limits: testLimits, RequestTimeout: time.Second,
		Broker: func() error { return nil }, APIKey: key,
		MetricsHandler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }),
	}, zap.New(core))

	do := func(method, path, auth, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	embedBody := `{"documents":["a"]}`
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + key + "x", "Basic " + key, key} {
		rec := do(http.MethodPost, "/embed", auth, embedBody)
		require.Equal(t, http.StatusUnauthorized, rec.Code, "auth %q", auth)
		require.Contains(t, rec.Header().Get("WWW-Authenticate"), "Bearer")
		var e map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e))
		require.Equal(t, "unauthorized", e["code"])
	}
	require.Equal(t, http.StatusOK, do(http.MethodPost, "/embed", "Bearer "+key, embedBody).Code)

	rec := do(http.MethodPost, "/v1/embeddings", "", `{"input":"a"}`)
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	var oe openAIError
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &oe))
	require.Equal(t, "invalid_api_key", oe.Error.Code)
	require.Equal(t, "authentication_error", oe.Error.Type)
	require.Equal(t, http.StatusOK, do(http.MethodPost, "/v1/embeddings", "Bearer "+key, `{"input":"a"}`).Code)

	require.Equal(t, http.StatusOK, do(http.MethodGet, "/health", "", "").Code, "probes need no key")
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/metrics", "", "").Code, "scrapers need no key")

	for _, e := range logs.All() {
		line, _ := json.Marshal(e.ContextMap())
		require.NotContains(t, e.Message+string(line), key, "the key is never logged")
	}
}

func TestNoAPIKeyMeansOpen(t *testing.T) {
	t.Parallel()
	emb := fakeQueue(func(_ context.Context, req dispatch.Request) (dispatch.Result, error) {
		return dispatch.Result{Vectors: [][]float32{{1, 0}}}, nil
	})
	s := New(emb, fixedReadiness{n: 1}, Options{Model: "m", Dims: 2, Limits: testLimits, RequestTimeout: time.Second,
		Broker: func() error { return nil }}, zap.NewNop())
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/embed", strings.NewReader(`{"documents":["a"]}`)))
	require.Equal(t, http.StatusOK, rec.Code)
}
