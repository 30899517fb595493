package vector

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// parseVectorRows decodes b, a JSON array of arrays of numbers or null, as
// DecodeObject decodes its vectors member.
func parseVectorRows(b []byte) ([][]float32, error) {
	p := floatParser{b: b}
	p.space()
	rows, err := p.vectorRows()
	if err != nil {
		return nil, err
	}
	p.space()
	return rows, p.end()
}

// sameBits compares float32s bit for bit (so -0 differs from 0).
func sameBits(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }

// decimals returns number strings that stress the rounding: shortest forms
// of random float32s over the whole range, their float64 forms (17 digits,
// often near a float32 halfway point), exact halfway points, and random
// digit strings of every length.
func decimals(r *rand.Rand, n int) []string {
	var out []string
	for range n {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		out = append(out,
			strconv.FormatFloat(float64(f), 'g', -1, 32),
			strconv.FormatFloat(float64(f), 'e', -1, 32),
			strconv.FormatFloat(float64(f), 'f', -1, 32),
			strconv.FormatFloat(float64(f), 'g', -1, 64))
		g := float32(r.NormFloat64() * 0.02) // what an embedding holds
		out = append(out, strconv.FormatFloat(float64(g), 'g', -1, 32))
		// The exact halfway point between g and the next float32 up, and
		// its neighbours in the 17th digit.
		next := math.Nextafter32(g, float32(math.Inf(1)))
		half := (float64(g) + float64(next)) / 2
		out = append(out,
			strconv.FormatFloat(half, 'e', 60, 64),
			strconv.FormatFloat(half, 'g', 17, 64),
			strconv.FormatFloat(math.Nextafter(half, 1), 'g', -1, 64),
			strconv.FormatFloat(math.Nextafter(half, -1), 'g', -1, 64))
		var sb strings.Builder
		if r.IntN(2) == 0 {
			sb.WriteByte('-')
		}
		sb.WriteString(strconv.Itoa(r.IntN(1000)))
		sb.WriteByte('.')
		for range 1 + r.IntN(24) {
			sb.WriteByte(byte('0' + r.IntN(10)))
		}
		if r.IntN(2) == 0 {
			sb.WriteString("e" + strconv.Itoa(r.IntN(90)-45))
		}
		out = append(out, sb.String())
	}
	return out
}

func TestParseFloat32MatchesStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	cases := append(decimals(r, 50_000),
		"0", "-0", "0.0", "-0.0e5", "1", "-1", "1e38", "3.4028235e38", "3.4028236e38", "1e-45", "1e-46",
		"1.17549435e-38", "1.1754942e-38", "16777217", "16777216.5", "0.015625", "9007199254740993",
		"123456789012345678901234567890", "0.000000000000000000000000000001", "1E5", "1e+5", "2.5E-3")
	for _, s := range cases {
		want, werr := strconv.ParseFloat(s, 32)
		p := floatParser{b: []byte(s)}
		got, err := p.number()
		if werr != nil {
			if err == nil {
				t.Errorf("%s: got %v, strconv refuses it: %v", s, got, werr)
			}
			continue
		}
		if err != nil || !sameBits(got, float32(want)) || p.i != len(s) {
			t.Fatalf("%s: got %v (%#x) err %v at %d, want %v (%#x)", s, got, math.Float32bits(got), err, p.i, float32(want), math.Float32bits(float32(want)))
		}
	}
}

func TestParseVectorRows(t *testing.T) {
	good := []string{
		`[[0.5,-1,2e-3],[1,2,3]]`, ` [ [ 0.5 , -1 ] , [ 1 , 2 ] ] `, `[]`, `[[]]`, `null`, `[[1],[]]`, "[\n[1,\t2]\r\n]",
	}
	for _, s := range good {
		var want [][]float32
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("%s: encoding/json: %v", s, err)
		}
		got, err := parseVectorRows([]byte(s))
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if (got == nil) != (want == nil) || len(got) != len(want) {
			t.Errorf("%s: got %v, want %v", s, got, want)
			continue
		}
		for i := range want {
			if len(got[i]) != len(want[i]) {
				t.Errorf("%s: row %d: got %v, want %v", s, i, got[i], want[i])
				continue
			}
			for j := range want[i] {
				if !sameBits(got[i][j], want[i][j]) {
					t.Errorf("%s: [%d][%d] got %v, want %v", s, i, j, got[i][j], want[i][j])
				}
			}
		}
	}
	bad := []string{
		``, `[`, `[[`, `[[1,]]`, `[[1 2]]`, `[[01]]`, `[[1.]]`, `[[.5]]`, `[[1e]]`, `[[1e+]]`, `[[+1]]`, `[[-]]`,
		`[[1]]x`, `[[1]],`, `[1]`, `[[1],]`, `[["1"]]`, `[[NaN]]`, `[[Infinity]]`, `[[1e39]]`, `[[-1e39]]`,
		`{}`, `nul`, `[[1]][[2]]`, `[[0x1]]`, `[[1e5.5]]`, `[[1,,2]]`, `[[- 1]]`,
	}
	// Stricter than encoding/json, which leaves a 0 for a null number.
	if _, err := parseVectorRows([]byte(`[[1,null]]`)); err == nil || !strings.Contains(err.Error(), nullNumber) {
		t.Errorf("a null number: %v", err)
	}
	for _, s := range bad {
		if got, err := parseVectorRows([]byte(s)); err == nil {
			t.Errorf("%q: got %v, want an error", s, got)
		}
		var v [][]float32
		if json.Valid([]byte(s)) && json.Unmarshal([]byte(s), &v) == nil {
			t.Errorf("%q: encoding/json accepts it; the case is wrong", s)
		}
	}
}

// FuzzParseVectorRows holds the decoder to encoding/json's answer for
// [][]float32: the same error-or-not, the same bits.
func FuzzParseVectorRows(f *testing.F) {
	for _, s := range []string{`[[0.1,-2e-7,3.4028235e38]]`, `[[1],[2,3]]`, `null`, `[]`, `[[1e39]]`, `[[0.00000000000000000000001234567890123456789]]`, `[[-0]]`, ` [ [ 1 ] ] `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want [][]float32
		werr := json.Unmarshal(b, &want)
		got, err := parseVectorRows(b)
		if err != nil && werr == nil && strings.Contains(err.Error(), nullNumber) {
			return // stricter on purpose: encoding/json leaves a 0 there
		}
		if (err != nil) != (werr != nil) {
			t.Fatalf("%q: error %v, encoding/json's %v", b, err, werr)
		}
		if err != nil {
			return
		}
		if (got == nil) != (want == nil) || len(got) != len(want) {
			t.Fatalf("%q: got %v, want %v", b, got, want)
		}
		for i := range want {
			if len(got[i]) != len(want[i]) {
				t.Fatalf("%q: row %d: got %v, want %v", b, i, got[i], want[i])
			}
			for j := range want[i] {
				if !sameBits(got[i][j], want[i][j]) {
					t.Fatalf("%q: [%d][%d] got %v, want %v", b, i, j, got[i][j], want[i][j])
				}
			}
		}
	})
}
