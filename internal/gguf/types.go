package gguf

import (
	"fmt"
	"math/bits"
)

// ggmlType is the storage layout of one ggml tensor type: elements per
// block and bytes per block (ggml's type traits, ggml/src/ggml.c).
type ggmlType struct {
	name  string
	block uint64
	bytes uint64
}

// ggmlTypes lists the types llama.cpp writes today, by id. Ids 4 and 5
// (Q4_2, Q4_3) and 31–33, 36–38 were removed from ggml and are refused.
var ggmlTypes = map[uint32]ggmlType{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2}, 2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24}, 8: {"Q8_0", 32, 34}, 9: {"Q8_1", 32, 36},
	10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144}, 13: {"Q5_K", 256, 176},
	14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292}, 16: {"IQ2_XXS", 256, 66}, 17: {"IQ2_XS", 256, 74},
	18: {"IQ3_XXS", 256, 98}, 19: {"IQ1_S", 256, 50}, 20: {"IQ4_NL", 32, 18}, 21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82}, 23: {"IQ4_XS", 256, 136}, 24: {"I8", 1, 1}, 25: {"I16", 1, 2},
	26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 29: {"IQ1_M", 256, 56},
	30: {"BF16", 1, 2}, 34: {"TQ1_0", 256, 54}, 35: {"TQ2_0", 256, 66}, 39: {"MXFP4", 32, 17},
}

// tensorSize is the bytes a tensor's data takes, checked for a known type,
// non-zero dimensions, whole blocks along the first one, and no overflow.
func tensorSize(t Tensor) (uint64, error) {
	gt, ok := ggmlTypes[t.Type]
	if !ok {
		return 0, fmt.Errorf("%q has unknown ggml type %d", t.Name, t.Type)
	}
	elems := uint64(1)
	for _, d := range t.Dims {
		if d == 0 {
			return 0, fmt.Errorf("%q has a zero dimension %v", t.Name, t.Dims)
		}
		hi, lo := bits.Mul64(elems, d)
		if hi != 0 {
			return 0, fmt.Errorf("%q: shape %v overflows", t.Name, t.Dims)
		}
		elems = lo
	}
	if t.Dims[0]%gt.block != 0 {
		return 0, fmt.Errorf("%q: first dimension %d is not a multiple of %s's block of %d", t.Name, t.Dims[0], gt.name, gt.block)
	}
	hi, size := bits.Mul64(elems/gt.block, gt.bytes)
	if hi != 0 {
		return 0, fmt.Errorf("%q: shape %v overflows", t.Name, t.Dims)
	}
	return size, nil
}
