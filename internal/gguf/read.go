// Reading a header: every count, length and offset checked against the file.

package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
)

type decoder struct {
	r    *bufio.Reader
	off  int64
	size int64
	rec  *bytes.Buffer // when set, every byte read is appended here
}

func (d *decoder) left() int64 { return d.size - d.off }

func (d *decoder) read(n int64, what string) ([]byte, error) {
	if n > d.left() {
		return nil, fmt.Errorf("truncated: %s needs %d bytes at offset %d, the file ends at %d", what, n, d.off, d.size)
	}
	if d.off+n > maxHeaderSize {
		return nil, fmt.Errorf("header runs past %d bytes (at %s)", maxHeaderSize, what)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		return nil, fmt.Errorf("reading %s at offset %d: %w", what, d.off, err)
	}
	d.off += n
	if d.rec != nil {
		d.rec.Write(b)
	}
	return b, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.read(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.read(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (d *decoder) str(what string, limit uint64) (string, error) {
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > limit || int64(n) > d.left() {
		return "", fmt.Errorf("truncated or corrupt: %s claims %d bytes at offset %d, %d are left in the file", what, n, d.off-8, d.left())
	}
	b, err := d.read(int64(n), what)
	return string(b), err
}

// count reads a u64 count of items of at least minSize bytes each and
// checks that they could fit in what is left of the file.
func (d *decoder) count(what string, minSize int64) (uint64, error) {
	n, err := d.u64(what)
	if err != nil {
		return 0, err
	}
	if minSize > 0 && n > uint64(d.left()/minSize) {
		return 0, fmt.Errorf("truncated or corrupt: %s is %d, but %d bytes are left in the file (at least %d each)", what, n, d.left(), minSize)
	}
	return n, nil
}

func (d *decoder) file() (*File, error) {
	if d.size < 24 {
		return nil, fmt.Errorf("%d bytes is too short for a GGUF header (24)", d.size)
	}
	magic, err := d.read(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != "GGUF" {
		return nil, fmt.Errorf("not a GGUF file: magic %q, want \"GGUF\"", magic)
	}
	f := &File{Size: d.size, Alignment: 32}
	if f.Version, err = d.u32("version"); err != nil {
		return nil, err
	}
	if f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("GGUF version %d is not supported (2 or 3)", f.Version)
	}
	const minTensorInfo = 8 + 4 + 8 + 4 + 8 // name length, dims count, one dim, type, offset
	tensors, err := d.count("tensor count", minTensorInfo)
	if err != nil {
		return nil, err
	}
	kvs, err := d.count("metadata count", 8+4+1)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, kvs)
	for i := uint64(0); i < kvs; i++ {
		kv, err := d.kv()
		if err != nil {
			return nil, fmt.Errorf("metadata %d: %w", i, err)
		}
		if seen[kv.Key] {
			return nil, fmt.Errorf("metadata key %q appears twice", kv.Key)
		}
		seen[kv.Key] = true
		f.KVs = append(f.KVs, kv)
	}
	if kv, ok := f.Lookup("general.alignment"); ok {
		a, ok := kv.Value.(uint32)
		if !ok || a == 0 || bits.OnesCount32(a) != 1 {
			return nil, fmt.Errorf("general.alignment must be a power of two (u32), got %v", kv.Value)
		}
		f.Alignment = uint64(a)
	}
	if _, ok := f.String("general.architecture"); !ok {
		return nil, errors.New("no general.architecture (a string)")
	}

	d.rec = new(bytes.Buffer)
	names := make(map[string]bool, tensors)
	for i := uint64(0); i < tensors; i++ {
		t, err := d.tensor()
		if err != nil {
			return nil, fmt.Errorf("tensor %d: %w", i, err)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		names[t.Name] = true
		f.Tensors = append(f.Tensors, t)
	}
	f.tensorTable, d.rec = d.rec.Bytes(), nil
	f.DataOffset = int64(alignUp(uint64(d.off), f.Alignment))
	if f.DataOffset > d.size {
		return nil, fmt.Errorf("truncated: the data section would start at %d, the file ends at %d", f.DataOffset, d.size)
	}
	return f, f.checkTensors()
}

func (d *decoder) kv() (KV, error) {
	key, err := d.str("key", maxKeyLen)
	if err != nil {
		return KV{}, err
	}
	d.rec = new(bytes.Buffer)
	typ, val, err := d.value(key, 0)
	raw := d.rec.Bytes()
	d.rec = nil
	if err != nil {
		return KV{}, fmt.Errorf("%q: %w", key, err)
	}
	return KV{Key: key, Type: typ, Value: val, raw: raw}, nil
}

// value reads a type tag and the value after it.
func (d *decoder) value(key string, depth int) (ValueType, any, error) {
	t, err := d.u32("value type")
	if err != nil {
		return 0, nil, err
	}
	typ := ValueType(t)
	if !typ.valid() {
		return 0, nil, fmt.Errorf("unknown value type %d", t)
	}
	if typ == TypeArray {
		v, err := d.array(key, depth)
		return typ, v, err
	}
	v, err := d.scalar(typ)
	return typ, v, err
}

func (d *decoder) scalar(typ ValueType) (any, error) {
	if typ == TypeString {
		return d.str("string", maxStringLen)
	}
	b, err := d.read(scalarSize[typ], "value")
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	switch typ {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("bool is %d, want 0 or 1", b[0])
		}
		return b[0] == 1, nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	default: // TypeFloat64
		return math.Float64frombits(le.Uint64(b)), nil
	}
}

func (d *decoder) array(key string, depth int) (Array, error) {
	if depth >= maxArrayDepth {
		return Array{}, fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
	}
	t, err := d.u32("array element type")
	if err != nil {
		return Array{}, err
	}
	et := ValueType(t)
	if !et.valid() {
		return Array{}, fmt.Errorf("unknown array element type %d", t)
	}
	n, err := d.count("array length", et.minSize())
	if err != nil {
		return Array{}, err
	}
	switch et {
	case TypeString:
		for i := uint64(0); i < n; i++ {
			if _, err := d.str(fmt.Sprintf("element %d", i), maxStringLen); err != nil {
				return Array{}, err
			}
		}
	case TypeArray:
		for i := uint64(0); i < n; i++ {
			if _, err := d.array(key, depth+1); err != nil {
				return Array{}, fmt.Errorf("element %d: %w", i, err)
			}
		}
	case TypeBool:
		b, err := d.read(int64(n), "bool array")
		if err != nil {
			return Array{}, err
		}
		for i, v := range b {
			if v > 1 {
				return Array{}, fmt.Errorf("element %d: bool is %d, want 0 or 1", i, v)
			}
		}
	default:
		if _, err := d.read(int64(n)*scalarSize[et], "array data"); err != nil {
			return Array{}, err
		}
	}
	return Array{Type: et, Len: n}, nil
}

func (d *decoder) tensor() (Tensor, error) {
	name, err := d.str("name", maxKeyLen)
	if err != nil {
		return Tensor{}, err
	}
	nd, err := d.u32("dimension count")
	if err != nil {
		return Tensor{}, err
	}
	if nd == 0 || nd > maxDims {
		return Tensor{}, fmt.Errorf("%q has %d dimensions (1 to %d)", name, nd, maxDims)
	}
	t := Tensor{Name: name, Dims: make([]uint64, nd)}
	for i := range t.Dims {
		if t.Dims[i], err = d.u64("dimension"); err != nil {
			return Tensor{}, err
		}
	}
	if t.Type, err = d.u32("tensor type"); err != nil {
		return Tensor{}, err
	}
	if t.Offset, err = d.u64("tensor offset"); err != nil {
		return Tensor{}, err
	}
	if t.Size, err = tensorSize(t); err != nil {
		return Tensor{}, err
	}
	return t, nil
}

// checkTensors checks that every tensor is aligned and lies inside the data
// section, and that no two overlap.
func (f *File) checkTensors() error {
	data := uint64(f.Size - f.DataOffset)
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	var end uint64
	for n, i := range order {
		t := f.Tensors[i]
		if t.Offset%f.Alignment != 0 {
			return fmt.Errorf("tensor %q: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > data || t.Size > data-t.Offset {
			return fmt.Errorf("truncated: tensor %q (%d bytes at data offset %d) ends past the file's %d data bytes", t.Name, t.Size, t.Offset, data)
		}
		if n > 0 && t.Offset < end {
			return fmt.Errorf("tensor %q at data offset %d overlaps the tensor before it (which ends at %d)", t.Name, t.Offset, end)
		}
		end = t.Offset + t.Size
	}
	return nil
}
