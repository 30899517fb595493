package wire

import (
	"math/rand/v2"
	"testing"
	"time"
)

func BenchmarkEnvelope(b *testing.B) {
	docs := make([]string, 32)
	for i := range docs {
		docs[i] = "a project description of about sixty words, typical of what WAYWO stores for one project " + string(rune('a'+i))
	}
	job := Job{RequestID: "req", ReplyTo: "embed.reply.x.req.0", Deadline: time.Now(), Documents: docs}
	b.Run("JobEncode", func(b *testing.B) {
		for b.Loop() {
			_ = job.Msg(JobsSubject)
		}
	})
	m := job.Msg(JobsSubject)
	b.Run("JobDecode", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeJob(m.Header, m.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
	r := rand.New(rand.NewPCG(1, 2))
	vecs := make([][]float32, 32)
	for i := range vecs {
		vecs[i] = make([]float32, 4096)
		for j := range vecs[i] {
			vecs[i][j] = float32(r.NormFloat64() * 0.02)
		}
	}
	reply := Reply{Vectors: vecs, Tokens: 100, Worker: "w"}
	b.Run("ReplyEncode32x4096", func(b *testing.B) {
		for b.Loop() {
			_ = reply.Msg("x.y")
		}
	})
	rm := reply.Msg("x.y")
	b.Run("ReplyDecode32x4096", func(b *testing.B) {
		b.SetBytes(int64(len(rm.Data)))
		for b.Loop() {
			if _, err := DecodeReply(rm.Header, rm.Data, 32, 4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}
