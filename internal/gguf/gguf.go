// Package gguf reads the header of a GGUF model file, checks it against the
// file's size, and writes a copy with some metadata keys set while the
// tensor data streams through byte for byte.
//
// It reads only what the embedding service needs to trust a file before
// handing it to Ollama (the metadata and the tensor table); the tensor data
// itself, gigabytes of it, is never held in memory.
package gguf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ErrInvalid is wrapped by every error about a malformed file.
var ErrInvalid = errors.New("invalid GGUF file")

// ValueType is the type tag of a metadata value.
type ValueType uint32

// The metadata value types of the GGUF specification.
const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

// scalarSize is the encoded size of each fixed-size type; 0 for the others.
var scalarSize = [...]int64{1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}

func (t ValueType) valid() bool { return t <= TypeFloat64 }

// minSize is the fewest bytes one value of the type takes, for bounding
// counts by what is left of the file.
func (t ValueType) minSize() int64 {
	switch t {
	case TypeString:
		return 8
	case TypeArray:
		return 12
	}
	return scalarSize[t]
}

// Array is the decoded form of an array value: its element type and length.
// Elements are kept only as raw bytes (for rewriting), never decoded.
type Array struct {
	Type ValueType
	Len  uint64
}

// KV is one metadata pair. Value holds the decoded scalar (uint8 … float64,
// bool, string) or an Array.
type KV struct {
	Key   string
	Type  ValueType
	Value any
	raw   []byte // the value as encoded, type tag first
}

// Tensor is one entry of the tensor table.
type Tensor struct {
	Name   string
	Dims   []uint64
	Type   uint32 // ggml type
	Offset uint64 // from the start of the data section
	Size   uint64 // bytes
}

// File is a parsed header.
type File struct {
	Version    uint32
	KVs        []KV
	Tensors    []Tensor
	Alignment  uint64
	DataOffset int64 // where the data section starts
	Size       int64 // the whole file

	tensorTable []byte // the tensor infos as encoded
}

// Limits on what a header may claim, far above any real model (nemotron's
// vocabulary is 128k tokens, its merges ~280k) yet small enough that a
// hostile header cannot make us allocate gigabytes.
const (
	maxKeyLen     = 1 << 16
	maxStringLen  = 64 << 20
	maxHeaderSize = 1 << 30
	maxDims       = 4 // GGML_MAX_DIMS
	maxArrayDepth = 4
)

// Read parses and checks the header of the GGUF file r of size bytes:
// magic, version, every count, length and offset against the file's size,
// tensor types, shapes and alignment. It reads the header only.
func Read(r io.ReaderAt, size int64) (*File, error) {
	d := &decoder{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<20), size: size}
	f, err := d.file()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return f, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// Lookup returns the metadata pair with key.
func (f *File) Lookup(key string) (KV, bool) {
	for _, kv := range f.KVs {
		if kv.Key == key {
			return kv, true
		}
	}
	return KV{}, false
}

// String returns a string value.
func (f *File) String(key string) (string, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return "", false
	}
	s, ok := kv.Value.(string)
	return s, ok
}

// Uint returns an unsigned or non-negative integer value of any width.
func (f *File) Uint(key string) (uint64, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// Bool returns a bool value.
func (f *File) Bool(key string) (bool, bool) {
	kv, ok := f.Lookup(key)
	if !ok {
		return false, false
	}
	b, ok := kv.Value.(bool)
	return b, ok
}

// Architecture is general.architecture.
func (f *File) Architecture() string {
	s, _ := f.String("general.architecture")
	return s
}
