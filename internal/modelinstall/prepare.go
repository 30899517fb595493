// Package modelinstall puts the embedding model into an Ollama ready to
// serve: it fetches the GGUF (a local path, or an https URL downloaded with
// resume and a checksum), checks it, writes a prepared copy with the
// metadata Ollama and llama-server need to serve it as a bidirectional,
// mean-pooled embedding model, uploads it through Ollama's API, creates the
// model with one input window as context and batch, and proves it with
// /api/show and one embedding.
package modelinstall

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/waywo/embed/internal/gguf"
	"github.com/waywo/embed/internal/ollama"
)

// ErrBadModel is wrapped by every error about a GGUF file that cannot serve
// as the embedding model.
var ErrBadModel = errors.New("unusable model file")

// Plan checks a parsed GGUF against what serving it needs — an embedding
// length of dims, an architecture Ollama serves as an embedding model — and
// returns the metadata to set (ollama.Rules) with a line per change.
func Plan(f *gguf.File, dims int) ([]gguf.Set, []string, error) {
	arch := f.Architecture()
	n, ok := f.Uint(arch + ".embedding_length")
	switch {
	case !ok:
		return nil, nil, fmt.Errorf("%w: no %s.embedding_length (an integer)", ErrBadModel, arch)
	case n != uint64(dims):
		return nil, nil, fmt.Errorf("%w: %s.embedding_length is %d, EMBED_DIMENSIONS is %d", ErrBadModel, arch, n, dims)
	}
	rules := ollama.Rules(arch)
	if len(rules) == 0 {
		if _, ok := f.Lookup(arch + ".pooling_type"); !ok {
			return nil, nil, fmt.Errorf("%w: architecture %q has no %s.pooling_type: Ollama would serve it as a completion model, not an embedding model (nemotron's GGUF architecture is %q)",
				ErrBadModel, arch, arch, ollama.LlamaEmbed)
		}
		return nil, nil, nil
	}
	var sets []gguf.Set
	var changes []string
	for _, r := range rules {
		var s gguf.Set
		switch w := r.Want.(type) {
		case uint32:
			if v, ok := f.Uint(r.Key); ok && v == uint64(w) {
				continue
			}
			s = gguf.Uint32(r.Key, w)
		case bool:
			if v, ok := f.Bool(r.Key); ok && v == w {
				continue
			}
			s = gguf.Bool(r.Key, w)
		}
		was := "absent"
		if kv, ok := f.Lookup(r.Key); ok {
			was = fmt.Sprintf("%v", kv.Value)
		}
		sets = append(sets, s)
		changes = append(changes, fmt.Sprintf("set %s (was %s): %s", s, was, r.Why))
	}
	return sets, changes, nil
}

// Prepared describes a checked (and, where needed, rewritten) GGUF.
type Prepared struct {
	Path         string // the file to upload
	Digest       string // "sha256:<hex>" of Path
	Size         int64
	Architecture string
	Changes      []string // what was set; empty when the source serves as it is
}

// Open reads and checks the GGUF at path.
func Open(path string) (*os.File, *gguf.File, error) {
	in, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := in.Stat()
	if err != nil {
		in.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		in.Close()
		return nil, nil, fmt.Errorf("%w: %s is not a regular file", ErrBadModel, path)
	}
	f, err := gguf.Read(in, st.Size())
	if err != nil {
		in.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return in, f, nil
}

// PrepareFile checks the GGUF at in and writes to out a copy with Plan's
// metadata set: streamed, tensor data byte-identical, alignment kept, in
// left untouched. out appears only when complete (written beside it, then
// renamed) and is read back and checked again. With nothing to set, out is
// still written (an identical copy), so the command's result is always out.
func PrepareFile(in, out string, dims int) (Prepared, error) {
	src, f, err := Open(in)
	if err != nil {
		return Prepared{}, err
	}
	defer src.Close()
	if st, err := os.Stat(out); err == nil {
		if ist, _ := src.Stat(); os.SameFile(st, ist) {
			return Prepared{}, fmt.Errorf("the prepared copy must be another file than the source %s", in)
		}
	}
	sets, changes, err := Plan(f, dims)
	if err != nil {
		return Prepared{}, fmt.Errorf("%s: %w", in, err)
	}
	return prepare(src, f, sets, changes, out, dims)
}

// prepare writes the copy of src (parsed as f) with sets to out and reads
// it back: it must parse and need nothing more.
func prepare(src *os.File, f *gguf.File, sets []gguf.Set, changes []string, out string, dims int) (Prepared, error) {
	p := Prepared{Path: out, Architecture: f.Architecture(), Changes: changes}
	if err := writeCopy(out, src, f, sets, &p); err != nil {
		return Prepared{}, err
	}
	check, g, err := Open(out)
	if err != nil {
		return Prepared{}, fmt.Errorf("the prepared copy does not read back: %w", err)
	}
	check.Close()
	if more, _, err := Plan(g, dims); err != nil || len(more) > 0 {
		return Prepared{}, fmt.Errorf("the prepared copy %s still fails its checks (%v, %d keys unset)", out, err, len(more))
	}
	return p, nil
}

func writeCopy(out string, src *os.File, f *gguf.File, sets []gguf.Set, p *Prepared) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".partial-*")
	if err != nil {
		return fmt.Errorf("writing the prepared copy: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	if p.Size, err = gguf.Rewrite(io.MultiWriter(tmp, h), src, f, sets); err != nil {
		return fmt.Errorf("writing the prepared copy %s: %w", out, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("writing the prepared copy %s: %w", out, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing the prepared copy %s: %w", out, err)
	}
	if err = os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("writing the prepared copy: %w", err)
	}
	p.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return nil
}

// fileDigest is the "sha256:<hex>" of the file at path, streamed.
func fileDigest(path string) (string, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, fh, make([]byte, 4<<20))
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}
