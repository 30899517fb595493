package vector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrBadBlob is returned for bytes that are not a whole number of finite
// little-endian float32 values of the expected length.
var ErrBadBlob = errors.New("bad vector blob")

// maxFloats bounds n x dims so that sizes cannot overflow whatever a caller
// passes: 2^30 floats is 4 GiB.
const maxFloats = 1 << 30

// AppendVector appends v as little-endian float32 (numpy "<f4", the layout
// sqlite-vector and the WAYWO backend read).
func Append(dst []byte, v []float32) []byte {
	for _, f := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(f))
	}
	return dst
}

// DecodeVectors splits b into n vectors of dims float32 each. Every value must
// be finite: a NaN would poison every similarity computed from it.
func DecodeAll(b []byte, n, dims int) ([][]float32, error) {
	if n < 0 || dims <= 0 || (n > 0 && dims > maxFloats/n) {
		return nil, fmt.Errorf("%w: %d vectors of %d dimensions", ErrBadBlob, n, dims)
	}
	if len(b) != n*dims*4 {
		return nil, fmt.Errorf("%w: %d bytes, want %d vectors x %d dims x 4 = %d", ErrBadBlob, len(b), n, dims, n*dims*4)
	}
	flat := make([]float32, n*dims)
	for i := range flat {
		f := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return nil, fmt.Errorf("%w: value %d is %v", ErrBadBlob, i, f)
		}
		flat[i] = f
	}
	out := make([][]float32, n)
	for i := range out {
		out[i] = flat[i*dims : (i+1)*dims : (i+1)*dims]
	}
	return out, nil
}

// DecodeVector decodes one stored blob of dims float32 values.
func Decode(b []byte, dims int) ([]float32, error) {
	vs, err := DecodeAll(b, 1, dims)
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}
