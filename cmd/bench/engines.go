// The engines group: the modelled nemotron-8b on a modelled GPU, through a
// serial runner and through the batching backend.

package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/waywo/embed/internal/enginesim"
	"github.com/waywo/embed/internal/ollamatest"
)

// engineRun is one row of the engines group with the modelled figures.
type engineRun struct {
	GPU, Engine, Texts string
	DocsPerS           float64
	TokensPerDoc       float64
	Ceiling            float64 // modelled, at the run's tokens per document
	SerialCeiling      float64 // modelled, one sequence a pass back to back
	Ratio              float64 // DocsPerS / Ceiling
	Utilisation        float64 // the modelled GPU's time in passes / the run's time
	PassesPerS         float64
}

// engines drives a modelled engine (enginesim: nemotron-8b's weights-read
// floor and per-token FLOPs on an H200 and an H100) at WAYWO's text
// lengths, search queries of about 20 tokens and project texts of about
// 200, through an Ollama-style serial runner (EMBED_BACKEND=ollama: one
// sequence a pass) and through the batching backend (EMBED_BACKEND=openai:
// the sequences of the worker's calls in flight packed into passes of up to
// 8192 tokens), and reports docs/s against the modelled ceiling.
func (b *bench) engines() error {
	const model, dims = "nemotron-sim", bigDims
	fmt.Println("engines: modelled nemotron-8b (a model, not a GPU measurement), serial runner vs batching engine")
	kinds := []struct {
		name             string
		bytes            int // 4 bytes a token, one for the special token
		clients, docsPer int
	}{
		{"queries (20 tokens)", 76, 192, 8},
		{"project texts (200 tokens)", 796, 32, 8},
	}
	for _, gpu := range []enginesim.GPU{enginesim.H200, enginesim.H100} {
		cost := enginesim.Default(gpu)
		for _, k := range kinds {
			c := &corpus{texts: textsOf(k.bytes, 5000)}
			for _, batching := range []bool{false, true} {
				s, err := enginesim.Start(cost, model, dims, batching)
				if err != nil {
					return err
				}
				engine := "serial runner (Ollama)"
				b.workerEnv = nil
				if batching {
					engine = "batching engine (openai)"
					b.workerEnv = map[string]string{"EMBED_BACKEND": "openai", "EMBED_BACKEND_URLS": s.URL + "/v1"}
				}
				old := b.c
				b.c = c
				start, before := time.Now(), s.Stats()
				r, err := b.pipelineRow(fmt.Sprintf("engines-%s-%d-%t", gpu.Name, k.bytes, batching), k.clients, k.docsPer, b.d, model, dims, [][]string{{s.URL}})
				b.c, b.workerEnv = old, nil
				st, wall := s.Stats(), time.Since(start)
				s.Stop()
				if err != nil {
					return err
				}
				seqs := st.Sequences - before.Sequences
				perDoc := float64(st.Tokens-before.Tokens) / float64(max(seqs, 1))
				ceiling := cost.Ceiling(int(perDoc + 0.5))
				run := engineRun{GPU: gpu.Name, Engine: engine, Texts: k.name, DocsPerS: r.Sample.DocsPerS, TokensPerDoc: perDoc,
					Ceiling: ceiling, SerialCeiling: cost.Serial(int(perDoc + 0.5)), Ratio: r.Sample.DocsPerS / ceiling,
					Utilisation: float64(st.Busy-before.Busy) / float64(wall), PassesPerS: float64(st.Passes-before.Passes) / wall.Seconds()}
				r.Group, r.Scenario, r.Ratio = "engines", fmt.Sprintf("%s, %s, %s", gpu.Name, k.name, engine), run.Ratio
				b.add(r)
				fmt.Printf("               modelled ceiling %.0f docs/s at %.1f tokens a document (one sequence a pass: %.0f): ratio %.3f; GPU busy %.0f%% of the row (set-up included), %.0f passes/s\n",
					ceiling, perDoc, run.SerialCeiling, run.Ratio, 100*run.Utilisation, run.PassesPerS)
				b.engineRuns = append(b.engineRuns, run)
				b.rep.Extra[fmt.Sprintf("engines_%s_%d_bytes_%s_ratio", gpu.Name, k.bytes, map[bool]string{false: "serial", true: "batching"}[batching])] = run.Ratio
			}
		}
	}
	return nil
}

// textsOf is n texts of exactly size bytes of words.
func textsOf(size, n int) []string {
	out := make([]string, n)
	for i := range out {
		var sb strings.Builder
		for seed := uint64(i) * 1000; sb.Len() < size; seed++ {
			sb.WriteString(ollamatest.Sentence(seed, 8))
			sb.WriteByte(' ')
		}
		out[i] = sb.String()[:size]
	}
	return out
}

// engineTargets: the batching backend reaches 0.8 of the modelled ceiling
// on the H200 at both lengths.
func (b *bench) engineTargets(add func(string, float64, string, bool)) {
	for _, r := range b.engineRuns {
		if r.GPU == "H200" && strings.HasPrefix(r.Engine, "batching") {
			add("modelled H200, "+r.Texts+": batching backend / ceiling", r.Ratio, ">= 0.8", r.Ratio >= 0.8)
		}
	}
}
