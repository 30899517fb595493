package ollama

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// ErrModelUnfit means Ollama has the model but serving it would fail (no
// embedding capability: every /api/embed answers 501) or would give wrong
// vectors (a bidirectional model run causally or without its pooling, a
// vector length other than EMBED_DIMENSIONS). Retrying cannot help; `api
// model install` prepares a fit model.
var ErrModelUnfit = errors.New("model unfit to serve")

// LlamaEmbed is the GGUF architecture llama.cpp's converter writes for
// llama-embed-nemotron-8b (LlamaBidirectionalModel).
const LlamaEmbed = "llama-embed"

// MinOllamaForLlamaEmbed is the first Ollama release that loads the
// llama-embed architecture: from v0.30.0 Ollama runs every GGUF in upstream
// llama-server; earlier releases' vendored llama.cpp predates it.
const MinOllamaForLlamaEmbed = "v0.30.0"

// Rule is one metadata key a model's GGUF must carry, with the value it
// must have, for Ollama (through llama-server) to serve it correctly.
type Rule struct {
	Key  string
	Want any // uint32 or bool
	Why  string
}

// Rules are the keys the architecture arch needs set beyond what llama.cpp's
// converter writes. llama-embed is a bidirectional, mean-pooled model, but
// the converter writes neither key: without pooling_type Ollama starts
// llama-server without --embedding (/api/embed answers 501); without
// attention.causal=false llama-server runs it causally, and its vectors are
// wrong with no error anywhere.
func Rules(arch string) []Rule {
	if arch != LlamaEmbed {
		return nil
	}
	return []Rule{
		{Key: arch + ".pooling_type", Want: uint32(1), Why: "mean pooling; without the key Ollama serves no embeddings (501)"},
		{Key: arch + ".attention.causal", Want: false, Why: "bidirectional attention; without it llama-server runs the model causally and its vectors are wrong"},
	}
}

// Served is what Ollama's /api/show says about a model, reduced to what
// decides whether it can serve our vectors.
type Served struct {
	Architecture string
	Dims         int
	Capabilities []string
	NumCtx       int // PARAMETER num_ctx; 0 when unset
	NumBatch     int // PARAMETER num_batch; 0 when unset
}

// CheckServed is the verdict on a model from its /api/show reply: it must
// have the embedding capability, carry its architecture's Rules with the
// right values, and have embedding_length == dims. host and name are for
// the message, which says what is wrong and what fixes it.
func CheckServed(show *api.ShowResponse, name, host string, dims int) (Served, error) {
	s := Served{}
	for _, c := range show.Capabilities {
		s.Capabilities = append(s.Capabilities, string(c))
	}
	s.Architecture, _ = show.ModelInfo["general.architecture"].(string)
	s.NumCtx, s.NumBatch = parameter(show.Parameters, "num_ctx"), parameter(show.Parameters, "num_batch")
	if n, ok := number(show.ModelInfo[s.Architecture+".embedding_length"]); ok {
		s.Dims = int(n)
	}
	fix := "run `api model install` to prepare and install it"
	var errs []error
	for _, r := range Rules(s.Architecture) {
		got, present := show.ModelInfo[r.Key]
		if !present {
			errs = append(errs, fmt.Errorf("%s is not set (want %v: %s)", r.Key, r.Want, r.Why))
			continue
		}
		if !sameValue(got, r.Want) {
			errs = append(errs, fmt.Errorf("%s is %v (want %v: %s)", r.Key, got, r.Want, r.Why))
		}
	}
	// Ollama before 0.6.4 lists no capabilities; its gate was the same key.
	_, pooled := show.ModelInfo[s.Architecture+".pooling_type"]
	embeds := hasCapability(show.Capabilities, model.CapabilityEmbedding) || (len(show.Capabilities) == 0 && pooled)
	if !embeds {
		errs = append(errs, fmt.Errorf("it has no embedding capability (capabilities %v): Ollama would answer 501 \"this server does not support embeddings\"", s.Capabilities))
	}
	if s.Dims != dims {
		errs = append(errs, fmt.Errorf("%s.embedding_length is %d, EMBED_DIMENSIONS is %d", s.Architecture, s.Dims, dims))
		fix = "set EMBED_DIMENSIONS to the model's length, or EMBED_MODEL to a model of that length"
	}
	if len(errs) > 0 {
		return s, fmt.Errorf("%w: model %q at %s (architecture %q): %w; %s", ErrModelUnfit, name, host, s.Architecture, errors.Join(errs...), fix)
	}
	return s, nil
}

func hasCapability(cs []model.Capability, want model.Capability) bool {
	for _, c := range cs {
		if c == want {
			return true
		}
	}
	return false
}

// sameValue compares a JSON-decoded model_info value with a rule's.
func sameValue(got, want any) bool {
	switch w := want.(type) {
	case bool:
		b, ok := got.(bool)
		return ok && b == w
	case uint32:
		n, ok := number(got)
		return ok && n == float64(w)
	}
	return false
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint32:
		return float64(n), true
	}
	return 0, false
}

// parameter reads an integer parameter from /api/show's "parameters", one
// "name value" per line.
func parameter(params, name string) int {
	for line := range strings.Lines(params) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// explainLoadFailure turns Ollama's failure to load a llama-embed model
// into a message that names the release it needs. Ollama's reply says only
// "unable to load model: <blob>" (the runner's "unknown model architecture:
// 'llama-embed'" stays in Ollama's log), so the architecture comes from
// /api/show and the version from /api/version.
func explainLoadFailure(err error, arch, name, host, version string) error {
	if err == nil || arch != LlamaEmbed {
		return err
	}
	msg := err.Error()
	if !strings.Contains(msg, "unable to load model") && !strings.Contains(msg, "unknown model architecture") {
		return err
	}
	if !versionBefore(version, MinOllamaForLlamaEmbed) {
		return fmt.Errorf("%w: Ollama %s at %s could not load model %q (%w); see Ollama's log", ErrModelUnfit, version, host, name, err)
	}
	return fmt.Errorf("%w: Ollama %s at %s could not load model %q (%w): the %s architecture needs Ollama %s or later (set OLLAMA_VERSION)",
		ErrModelUnfit, version, host, name, err, LlamaEmbed, MinOllamaForLlamaEmbed)
}

// versionBefore says whether Ollama's version v ("0.10.1", "v0.32.15",
// "0.33.0-rc1") is before min; one it cannot read is not.
func versionBefore(v, min string) bool {
	parse := func(s string) ([3]int, bool) {
		s = strings.TrimPrefix(s, "v")
		s, _, _ = strings.Cut(s, "-")
		var out [3]int
		parts := strings.Split(s, ".")
		if len(parts) != 3 {
			return out, false
		}
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil {
				return out, false
			}
			out[i] = n
		}
		return out, true
	}
	a, ok1 := parse(v)
	b, ok2 := parse(min)
	if !ok1 || !ok2 {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
