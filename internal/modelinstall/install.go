package modelinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/engine"
	"github.com/waywo/embed/internal/ollama"
	"github.com/waywo/embed/internal/vector"
)

// Options say what to install where.
type Options struct {
	Ollama  *url.URL // OLLAMA_HOST
	Model   string   // EMBED_MODEL
	Dims    int      // EMBED_DIMENSIONS
	Context int      // EMBED_CONTEXT: num_ctx and the embedding batch size
	Source  string   // EMBED_MODEL_SOURCE: a GGUF path or an https URL
	SHA256  string   // EMBED_MODEL_SHA256: of the source file; optional
	WorkDir string   // where downloads and the prepared copy go
	Force   bool     // install even when a fit model is there
	Timeout time.Duration
	// HTTP downloads the source; nil means a client with the system's
	// proxy settings and no overall timeout (the context bounds it).
	HTTP     *http.Client
	Progress io.Writer // progress bars; io.Discard for none
	Log      *zap.Logger
}

// Result says what Install did.
type Result struct {
	AlreadyInstalled bool // a fit model was there: nothing was uploaded
	Prepared         Prepared
	Fingerprint      vector.Fingerprint
}

// Install makes opts.Model ready to serve in the Ollama at opts.Ollama.
// When the model is already there, passes CheckServed and has num_ctx and
// num_batch equal to opts.Context, it only proves it with one embedding.
// Otherwise it fetches the source, checks and prepares it, uploads it as a
// blob (skipped when Ollama already holds that digest), creates the model
// from it with the parameters set, and proves the result the same way.
// Downloads and the prepared copy are removed once the model is proven;
// after a failure they stay, so a second run resumes.
func Install(ctx context.Context, o Options) (Result, error) {
	log := o.Log.Named("model-install")
	client := ollama.NewClient(o.Ollama)
	host := o.Ollama.String()
	model := ollama.NewEndpoint(o.Ollama, ollama.Options{
		Model: o.Model, Dims: o.Dims, MaxBatch: 1, Timeout: o.Timeout, KeepAlive: -1, Truncate: true, Log: log,
	})
	if !o.Force {
		state, why, err := fit(ctx, client, o)
		switch {
		case err != nil:
			return Result{}, err
		case state == fitOK:
			log.Info("model already installed; checking it serves", zap.String("model", o.Model), zap.String("ollama", host))
			if err := model.Prepare(ctx); err != nil {
				return Result{}, err
			}
			return Result{AlreadyInstalled: true, Fingerprint: model.Fingerprint()}, nil
		case state == fitParams:
			// The model itself serves; only its parameters change: a new
			// manifest over the same weights, no upload.
			log.Info("setting the model's parameters", zap.String("model", o.Model), zap.String("because", why))
			if err := create(ctx, client, o, api.CreateRequest{From: o.Model}, log); err != nil {
				return Result{}, err
			}
			return verified(ctx, client, model, o, Prepared{}, nil, log)
		default:
			log.Info("installing the model", zap.String("model", o.Model), zap.String("ollama", host), zap.String("because", why))
		}
	}
	if o.Source == "" {
		return Result{}, fmt.Errorf("model %q must be installed in Ollama at %s, and EMBED_MODEL_SOURCE is empty: set it to a GGUF path or an https URL of llama-embed-nemotron-8b's GGUF", o.Model, host)
	}
	var cleanup []string
	src := o.Source
	if strings.Contains(src, "://") {
		hc := o.HTTP
		if hc == nil {
			hc = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
		}
		var err error
		if src, err = Download(ctx, hc, o.Source, o.WorkDir, o.SHA256, o.Progress, log); err != nil {
			return Result{}, err
		}
		cleanup = append(cleanup, src)
	} else if o.SHA256 != "" {
		if err := verify(src, strings.ToLower(o.SHA256)); err != nil {
			return Result{}, err
		}
	}

	p, err := prepareForUpload(src, o, log)
	if err != nil {
		return Result{}, err
	}
	if p.Path != src {
		cleanup = append(cleanup, p.Path)
	}
	if err := upload(ctx, client, o.Ollama, p, o.Progress, log); err != nil {
		return Result{}, err
	}
	if err := create(ctx, client, o, api.CreateRequest{Files: map[string]string{"model.gguf": p.Digest}}, log); err != nil {
		return Result{}, err
	}
	return verified(ctx, client, model, o, p, cleanup, log)
}

// verified reads the created model back, proves it with one embedding, and
// then removes the working copies.
func verified(ctx context.Context, client *api.Client, model *ollama.Endpoint, o Options, p Prepared, cleanup []string, log *zap.Logger) (Result, error) {
	if state, why, err := fit(ctx, client, o); err != nil || state != fitOK {
		return Result{}, errors.Join(err, fmt.Errorf("created model %q does not read back as installed: %s", o.Model, why))
	}
	if err := model.Prepare(ctx); err != nil {
		return Result{}, err
	}
	for _, f := range cleanup {
		if err := os.Remove(f); err == nil {
			log.Info("removed the working copy (Ollama holds the model now)", zap.String("file", f))
		}
	}
	return Result{Prepared: p, Fingerprint: model.Fingerprint()}, nil
}

type fitState int

const (
	fitOK     fitState = iota // installed as Install leaves it
	fitParams                 // serves, but num_ctx or num_batch differ from EMBED_CONTEXT
	fitNo                     // missing, or unfit to serve
)

// fit says whether the installed model is as Install would leave it and,
// when not, why; a missing model is a reason, not an error.
func fit(ctx context.Context, client *api.Client, o Options) (fitState, string, error) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	show, err := client.Show(sctx, &api.ShowRequest{Model: o.Model})
	var se api.StatusError
	switch {
	case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
		return fitNo, "it is not in Ollama", nil
	case err != nil:
		return fitNo, "", fmt.Errorf("%w: cannot reach Ollama at %s (OLLAMA_HOST): %w", engine.ErrUnavailable, o.Ollama, err)
	}
	s, err := ollama.CheckServed(show, o.Model, o.Ollama.String(), o.Dims)
	if err != nil {
		return fitNo, err.Error(), nil
	}
	if s.NumCtx != o.Context || s.NumBatch != o.Context {
		return fitParams, fmt.Sprintf("num_ctx is %d and num_batch %d, EMBED_CONTEXT is %d", s.NumCtx, s.NumBatch, o.Context), nil
	}
	return fitOK, "", nil
}

// prepareForUpload checks src and returns the file to upload: src itself
// when it needs no change, else a prepared copy in the work directory.
func prepareForUpload(src string, o Options, log *zap.Logger) (Prepared, error) {
	in, f, err := Open(src)
	if err != nil {
		return Prepared{}, err
	}
	defer in.Close()
	sets, changes, err := Plan(f, o.Dims)
	if err != nil {
		return Prepared{}, fmt.Errorf("%s: %w", src, err)
	}
	if len(sets) == 0 {
		digest, size, err := fileDigest(src)
		if err != nil {
			return Prepared{}, err
		}
		log.Info("the model file serves as it is", zap.String("file", src), zap.String("architecture", f.Architecture()))
		return Prepared{Path: src, Digest: digest, Size: size, Architecture: f.Architecture()}, nil
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return Prepared{}, err
	}
	out := filepath.Join(o.WorkDir, strings.TrimSuffix(filepath.Base(src), ".gguf")+".prepared.gguf")
	log.Info("writing a prepared copy", zap.String("from", src), zap.String("to", out))
	p, err := prepare(in, f, sets, changes, out, o.Dims)
	if err != nil {
		return Prepared{}, err
	}
	for _, c := range p.Changes {
		log.Info("prepared: "+c, zap.String("file", out))
	}
	return p, nil
}

// upload sends the file to Ollama's blob store unless Ollama has it.
func upload(ctx context.Context, client *api.Client, base *url.URL, p Prepared, progress io.Writer, log *zap.Logger) error {
	head, err := http.NewRequestWithContext(ctx, http.MethodHead, base.JoinPath("/api/blobs", p.Digest).String(), nil)
	if err != nil {
		return err
	}
	if resp, err := ollama.NewHTTPClient().Do(head); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			log.Info("Ollama already holds the model file", zap.String("digest", p.Digest))
			return nil
		}
	}
	fh, err := os.Open(p.Path)
	if err != nil {
		return err
	}
	defer fh.Close()
	bar := progressbar.NewOptions64(p.Size,
		progressbar.OptionSetWriter(progress),
		progressbar.OptionSetDescription("upload to Ollama"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(500*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(progress) }),
	)
	start := time.Now()
	r := io.TeeReader(fh, bar)
	if err := client.CreateBlob(ctx, p.Digest, r); err != nil {
		return fmt.Errorf("uploading %s to Ollama at %s: %w", p.Path, base, err)
	}
	_ = bar.Finish()
	log.Info("uploaded the model file", zap.String("digest", p.Digest), zap.Int64("bytes", p.Size), zap.Duration("took", time.Since(start)))
	return nil
}

// create makes the model as req says — from the uploaded blob (Files, under
// the name "model.gguf", by which Ollama tells a GGUF) or from the model
// already there (From) — with one input window as context and batch:
// Ollama caps the embedding batch (llama-server's -b and -ub) at num_ctx
// and defaults it to 2048, and a bidirectional model needs a whole input in
// one micro-batch, so both are set together.
func create(ctx context.Context, client *api.Client, o Options, req api.CreateRequest, log *zap.Logger) error {
	req.Model = o.Model
	req.Parameters = map[string]any{"num_ctx": o.Context, "num_batch": o.Context}
	last := ""
	err := client.Create(ctx, &req, func(r api.ProgressResponse) error {
		if r.Status != last {
			last = r.Status
			fmt.Fprintln(o.Progress, "create:", r.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("creating model %q in Ollama at %s: %w", o.Model, o.Ollama, err)
	}
	log.Info("model created", zap.String("model", o.Model), zap.String("from_model", req.From), zap.Any("files", req.Files), zap.Int("num_ctx", o.Context), zap.Int("num_batch", o.Context))
	return nil
}
