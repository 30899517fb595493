package vector

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVectorBlobRoundTrip(t *testing.T) {
	t.Parallel()
	vs := [][]float32{{1, -0.5, 0.25, 3.4028235e38}, {0, -0, 1e-45, -1}}
	var b []byte
	for _, v := range vs {
		b = Append(b, v)
	}
	require.Len(t, b, 2*4*4)
	// Little-endian float32, as numpy's "<f4" writes it.
	require.Equal(t, []byte{0, 0, 0x80, 0x3f}, b[:4])
	require.Equal(t, uint32(0xbf000000), binary.LittleEndian.Uint32(b[4:]))

	got, err := DecodeAll(b, 2, 4)
	require.NoError(t, err)
	require.Equal(t, vs, got)

	one, err := Decode(b[:16], 4)
	require.NoError(t, err)
	require.Equal(t, vs[0], one)
}

func TestDecodeVectorsRejects(t *testing.T) {
	t.Parallel()
	nan := Append(nil, []float32{1, float32(math.NaN())})
	inf := Append(nil, []float32{float32(math.Inf(-1)), 1})
	for name, tc := range map[string]struct {
		b       []byte
		n, dims int
	}{
		"short":     {make([]byte, 15), 1, 4},
		"long":      {make([]byte, 17), 1, 4},
		"wrongN":    {make([]byte, 16), 2, 4},
		"zeroDims":  {nil, 1, 0},
		"negativeN": {nil, -1, 4},
		"nan":       {nan, 1, 2},
		"inf":       {inf, 1, 2},
		"overflow":  {nil, 1 << 40, 1 << 40},
		"overflow2": {make([]byte, 4), 1 << 62, 4},
	} {
		_, err := DecodeAll(tc.b, tc.n, tc.dims)
		require.ErrorIs(t, err, ErrBadBlob, name)
	}
}

func FuzzDecodeVectors(f *testing.F) {
	f.Add(Append(nil, []float32{1, 2, 3, 4}), 1, 4)
	f.Add([]byte{0, 0, 0xc0, 0x7f}, 1, 1) // NaN
	f.Add([]byte{}, 0, 4)
	f.Fuzz(func(t *testing.T, b []byte, n, dims int) {
		vs, err := DecodeAll(b, n, dims)
		if err != nil {
			return
		}
		require.Len(t, vs, n)
		var again []byte
		for _, v := range vs {
			require.Len(t, v, dims)
			again = Append(again, v)
		}
		require.True(t, bytes.Equal(b, again))
	})
}
