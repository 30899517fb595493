// Package search is semantic search over the vectors the sync writes into
// WAYWO_DB: an index in the api's memory of every row that holds one, and
// a search in two passes. The first ranks every row by the Hamming
// distance between its sign bits and the query's (each vector centred on
// the mean of the first rows indexed; 512 bytes a row at 4096
// dimensions, against 16 KiB of float32); the second scores the best
// candidates exactly, by cosine over their float32 blobs read from the
// file, and answers the top k of those. The sync keeps the index current
// (Put, as each vector commits), and Refresh brings it in line with the
// file (at start, at every reconcile, for a replaced file).
package search

import (
	"errors"
	"hash/maphash"
	"math"
	"sync"

	"gonum.org/v1/gonum/blas/blas32"
)

// meanRows is how many vectors the centre is taken from: rows indexed
// before that many are scored exactly in every search.
const meanRows = 256

// ErrLoading is a search before the index's first load has finished.
var ErrLoading = errors.New("the search index is loading")

// ErrUnreadable is a search whose vectors could not be read from the file
// (WAYWO_DB deleted, being replaced, or locked past its retries).
var ErrUnreadable = errors.New("the stored vectors cannot be read")

// ErrNotFound is a project that is not in the index: no such row, or no
// vector yet.
var ErrNotFound = errors.New("no such project with a vector")

// Index holds, per row with a vector: its id, whether it is a valid
// project, the model digest of its vector, a hash of its content and
// digest (a change reloads it), and its sign bits. Safe for concurrent
// use.
type Index struct {
	dims, words int
	seed        maphash.Seed

	mu       sync.RWMutex
	slot     map[int64]int32
	ids      []int64 // by slot; 0 is a free slot
	valid    []bool
	digest   []uint16 // into digests
	key      []uint64
	putSeq   []uint64 // the Put that last wrote the slot
	bits     []uint64 // words per slot
	free     []int32
	digests  []string
	digestOf map[string]uint16
	mean     []float32           // nil until meanRows vectors arrived
	pending  map[int64][]float32 // their unit vectors meanwhile
	seq      uint64              // Puts so far
	load     loadState
}

// New returns an empty index of dims-dimensional vectors, loading until
// its first Refresh.
func New(dims int) *Index {
	return &Index{
		dims: dims, words: (dims + 63) / 64, seed: maphash.MakeSeed(),
		slot: map[int64]int32{}, digestOf: map[string]uint16{}, pending: map[int64][]float32{},
	}
}

// Row is what Put stores of a row.
type Row struct {
	ID     int64
	Vector []float32 // the stored vector
	Valid  bool      // is_valid_project
	Hash   string    // embed_sync_state.content_hash
	Digest string    // the model digest the vector was computed under
}

// Put indexes (or re-indexes) a row's vector, as the sync writes it.
func (x *Index) Put(r Row) {
	u := unit(r.Vector)
	if u == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seq++
	x.put(r, u, x.seq)
}

// put writes r with its unit vector u at seq; mu held.
func (x *Index) put(r Row, u []float32, seq uint64) {
	s, ok := x.slot[r.ID]
	if !ok {
		if n := len(x.free); n > 0 {
			s, x.free = x.free[n-1], x.free[:n-1]
		} else {
			s = int32(len(x.ids))
			x.ids = append(x.ids, 0)
			x.valid = append(x.valid, false)
			x.digest = append(x.digest, 0)
			x.key = append(x.key, 0)
			x.putSeq = append(x.putSeq, 0)
			x.bits = append(x.bits, make([]uint64, x.words)...)
		}
		x.slot[r.ID] = s
	}
	x.ids[s], x.valid[s], x.digest[s], x.key[s], x.putSeq[s] = r.ID, r.Valid, x.digestIndex(r.Digest), x.keyOf(r.Hash, r.Digest), seq
	if x.mean == nil {
		x.pending[r.ID] = u
		if len(x.pending) >= meanRows {
			x.centre()
		}
		return
	}
	x.signBits(u, x.bits[int(s)*x.words:int(s+1)*x.words])
}

// Delete drops a row.
func (x *Index) Delete(id int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.delete(id)
}

func (x *Index) delete(id int64) {
	s, ok := x.slot[id]
	if !ok {
		return
	}
	delete(x.slot, id)
	delete(x.pending, id)
	x.ids[s] = 0
	x.free = append(x.free, s)
}

// centre sets the mean from the pending vectors and gives them their
// bits; mu held.
func (x *Index) centre() {
	x.mean = make([]float32, x.dims)
	for _, u := range x.pending {
		for i, v := range u {
			x.mean[i] += v
		}
	}
	for i := range x.mean {
		x.mean[i] /= float32(len(x.pending))
	}
	for id, u := range x.pending {
		s := x.slot[id]
		x.signBits(u, x.bits[int(s)*x.words:int(s+1)*x.words])
	}
	x.pending = nil
}

// signBits writes the bits of u centred on the mean: bit i is set when
// u[i] is above the mean's.
func (x *Index) signBits(u []float32, out []uint64) {
	clear(out)
	for i, v := range u {
		if v > x.mean[i] {
			out[i/64] |= 1 << (i % 64)
		}
	}
}

func (x *Index) digestIndex(d string) uint16 {
	if i, ok := x.digestOf[d]; ok {
		return i
	}
	i := uint16(len(x.digests))
	x.digests = append(x.digests, d)
	x.digestOf[d] = i
	return i
}

// keyOf is what tells that a row changed since it was indexed.
func (x *Index) keyOf(hash, digest string) uint64 {
	var h maphash.Hash
	h.SetSeed(x.seed)
	h.WriteString(hash)
	h.WriteByte(0)
	h.WriteString(digest)
	return h.Sum64()
}

// Len is how many rows are indexed.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.slot)
}

// Stale is how many indexed rows hold a vector of another digest than
// digest (searches leave them out).
func (x *Index) Stale(digest string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	di, ok := x.digestOf[digest]
	n := 0
	for s, id := range x.ids {
		if id != 0 && (!ok || x.digest[s] != di) {
			n++
		}
	}
	return n
}

// CommonDigest is the digest most indexed rows hold; empty for an empty
// index.
func (x *Index) CommonDigest() string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	counts := make([]int, len(x.digests))
	for s, id := range x.ids {
		if id != 0 {
			counts[x.digest[s]]++
		}
	}
	best := -1
	for i, n := range counts {
		if n > 0 && (best < 0 || n > counts[best]) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return x.digests[best]
}

// unit is v scaled to length 1; nil for a zero or non-finite vector.
func unit(v []float32) []float32 {
	n := norm(v)
	if n == 0 || math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return nil
	}
	u := make([]float32, len(v))
	for i, f := range v {
		u[i] = f / n
	}
	return u
}

// cosine is the cosine of a unit vector q and v.
func cosine(q, v []float32) float32 {
	d := blas32.Dot(blas32.Vector{N: len(q), Inc: 1, Data: q}, blas32.Vector{N: len(v), Inc: 1, Data: v})
	n := norm(v)
	if n == 0 {
		return 0
	}
	return d / n
}

// norm is v's Euclidean length, as the square root of its dot product with
// itself: blas32.Nrm2 scales every element against overflow, which no
// model's vector needs, and took 17 times as long at 4,096 dimensions (5.6 µs against 0.32 µs on
// the 2-core CI machine).
func norm(v []float32) float32 {
	x := blas32.Vector{N: len(v), Inc: 1, Data: v}
	return float32(math.Sqrt(float64(blas32.Dot(x, x))))
}
