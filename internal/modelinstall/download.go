package modelinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"
)

// ErrChecksum means a download's SHA-256 is not the one expected.
var ErrChecksum = errors.New("checksum mismatch")

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Download fetches the https URL src into dir, resuming a partial download
// left there by an earlier run (an HTTP Range request), with a progress bar
// on progress. The file is checked against want (hex SHA-256) or, when want
// is empty, against the SHA-256 the server states (Hugging Face's
// X-Linked-Etag for files in LFS); it takes its final name only once it
// matches. A complete earlier download is reused. Interrupted transfers are
// resumed up to attempts times in this run.
func Download(ctx context.Context, hc *http.Client, src, dir, want string, progress io.Writer, log *zap.Logger) (string, error) {
	u, err := url.Parse(src)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("model source %q: want a local GGUF path or an https URL", src)
	}
	want = strings.ToLower(want)
	if want != "" && !sha256Hex.MatchString(want) {
		return "", fmt.Errorf("EMBED_MODEL_SHA256 %q is not a hex SHA-256", want)
	}
	name := path.Base(u.Path)
	if name == "." || name == "/" || strings.HasPrefix(name, ".") {
		name = "model.gguf"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("download directory: %w", err)
	}
	dest := filepath.Join(dir, name)
	part := dest + ".part"
	if _, err := os.Stat(dest); err == nil {
		if want == "" {
			log.Info("reusing the earlier download", zap.String("file", dest))
			return dest, nil
		}
		if err := verify(dest, want); err == nil {
			log.Info("reusing the earlier download (checksum verified)", zap.String("file", dest))
			return dest, nil
		}
		log.Warn("the earlier download does not match EMBED_MODEL_SHA256; downloading again", zap.String("file", dest))
		if err := os.Rename(dest, part+".bad"); err != nil {
			return "", err
		}
		os.Remove(part + ".bad")
	}

	const attempts = 5
	d := &downloader{hc: hc, src: src, part: part, name: name, progress: progress, log: log}
	for i := 1; ; i++ {
		err = d.fetch(ctx)
		if err == nil || ctx.Err() != nil || i == attempts || errors.Is(err, errPermanent) {
			break
		}
		wait := time.Duration(i) * time.Second
		log.Warn("download interrupted; resuming", zap.Error(err), zap.Int("attempt", i), zap.Duration("in", wait))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w (the partial file %s is kept: run again to resume)", src, err, part)
	}
	if want == "" {
		want = d.stated
	}
	if want == "" {
		log.Warn("no checksum to verify the download against: set EMBED_MODEL_SHA256", zap.String("file", part))
	} else if err := verify(part, want); err != nil {
		os.Remove(part)
		return "", fmt.Errorf("downloading %s: %w; the file was removed, run again", src, err)
	}
	if err := os.Rename(part, dest); err != nil {
		return "", err
	}
	return dest, nil
}

func verify(path, want string) error {
	got, _, err := fileDigest(path)
	if err != nil {
		return err
	}
	if got != "sha256:"+want {
		return fmt.Errorf("%w: %s has %s, want sha256:%s", ErrChecksum, path, got, want)
	}
	return nil
}

// errPermanent marks a download failure that retrying cannot fix.
var errPermanent = errors.New("permanent")

type downloader struct {
	hc       *http.Client
	src      string
	part     string
	name     string
	progress io.Writer
	log      *zap.Logger
	stated   string // SHA-256 the server stated, hex
}

// fetch continues the download into d.part from where it stops.
func (d *downloader) fetch(ctx context.Context) error {
	out, err := os.OpenFile(d.part, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	defer out.Close()
	have, err := out.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.src, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	hc := *d.hc
	hc.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		d.noteChecksum(r.Response.Header) // Hugging Face states it on the redirect to its CDN
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	d.noteChecksum(resp.Header)
	total := int64(-1)
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		start, size, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			return fmt.Errorf("%w: asked for bytes from %d, got Content-Range %q", errPermanent, have, resp.Header.Get("Content-Range"))
		}
		total = size
		d.log.Info("resuming download", zap.String("file", d.part), zap.Int64("from", have))
	case resp.StatusCode == http.StatusOK:
		if have > 0 {
			d.log.Info("the server does not resume; starting over", zap.String("file", d.part))
			if err := out.Truncate(0); err != nil {
				return err
			}
			if _, err := out.Seek(0, io.SeekStart); err != nil {
				return err
			}
			have = 0
		}
		total = resp.ContentLength
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		// The part is already whole (or longer than the file): the
		// checksum decides; start over if it is wrong.
		if _, size, ok := contentRange(resp.Header.Get("Content-Range")); ok && size == have {
			return nil
		}
		if err := out.Truncate(0); err != nil {
			return err
		}
		return errors.New("the partial file is longer than the source; starting over")
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(body)))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			err = fmt.Errorf("%w: %w", errPermanent, err)
		}
		return err
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(d.progress),
		progressbar.OptionSetDescription("download "+d.name),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(500*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(d.progress) }),
	)
	_ = bar.Set64(have)
	n, err := io.CopyBuffer(io.MultiWriter(out, bar), resp.Body, make([]byte, 1<<20))
	_ = bar.Finish()
	if err != nil {
		return fmt.Errorf("interrupted at %d bytes: %w", have+n, err)
	}
	if total >= 0 && have+n != total {
		return fmt.Errorf("interrupted at %d of %d bytes", have+n, total)
	}
	return out.Sync()
}

// noteChecksum takes the SHA-256 a Hugging Face response states for an LFS
// file: X-Linked-Etag, or an ETag that is a bare SHA-256.
func (d *downloader) noteChecksum(h http.Header) {
	for _, k := range []string{"X-Linked-Etag", "Etag"} {
		v := strings.ToLower(strings.Trim(strings.TrimPrefix(h.Get(k), "W/"), `"`))
		if sha256Hex.MatchString(v) {
			d.stated = v
			return
		}
	}
}

// contentRange parses "bytes START-END/SIZE" (or "bytes */SIZE").
func contentRange(v string) (start, size int64, ok bool) {
	v, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, sz, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	size, err := strconv.ParseInt(sz, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if rng == "*" {
		return -1, size, true
	}
	s, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err = strconv.ParseInt(s, 10, 64)
	return start, size, err == nil
}
