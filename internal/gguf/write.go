package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Set is a metadata value to write: Uint32 or Bool builds one.
type Set struct {
	Key  string
	Type ValueType
	raw  []byte
	show string
}

// Uint32 sets key to a u32.
func Uint32(key string, v uint32) Set {
	return Set{Key: key, Type: TypeUint32, raw: binary.LittleEndian.AppendUint32(tag(TypeUint32), v), show: fmt.Sprint(v)}
}

// Bool sets key to a bool.
func Bool(key string, v bool) Set {
	b := byte(0)
	if v {
		b = 1
	}
	return Set{Key: key, Type: TypeBool, raw: append(tag(TypeBool), b), show: fmt.Sprint(v)}
}

func tag(t ValueType) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(t)) }

func (s Set) String() string { return s.Key + " = " + s.show }

// Rewrite writes f, read from src, to dst with the values in sets: a key
// already present keeps its place and takes the new value, a new key is
// appended. The tensor table is copied as read and the data section byte
// for byte, streamed (never held in memory), after padding the header to
// the file's alignment; tensor offsets are relative to the data section, so
// they stay valid. It returns the bytes written.
func Rewrite(dst io.Writer, src io.ReaderAt, f *File, sets []Set) (int64, error) {
	kvs := make([]KV, len(f.KVs))
	copy(kvs, f.KVs)
	for _, s := range sets {
		kv := KV{Key: s.Key, Type: s.Type, raw: s.raw}
		if i := indexOf(kvs, s.Key); i >= 0 {
			kvs[i] = kv
		} else {
			kvs = append(kvs, kv)
		}
	}
	cw := &countingWriter{w: dst}
	w := bufio.NewWriterSize(cw, 1<<20)
	le := binary.LittleEndian
	hdr := []byte("GGUF")
	hdr = le.AppendUint32(hdr, f.Version)
	hdr = le.AppendUint64(hdr, uint64(len(f.Tensors)))
	hdr = le.AppendUint64(hdr, uint64(len(kvs)))
	w.Write(hdr)
	for _, kv := range kvs {
		w.Write(le.AppendUint64(nil, uint64(len(kv.Key))))
		w.WriteString(kv.Key)
		w.Write(kv.raw)
	}
	w.Write(f.tensorTable)
	if err := w.Flush(); err != nil {
		return cw.n, err
	}
	if pad := alignUp(uint64(cw.n), f.Alignment) - uint64(cw.n); pad > 0 {
		if _, err := cw.Write(make([]byte, pad)); err != nil {
			return cw.n, err
		}
	}
	data := io.NewSectionReader(src, f.DataOffset, f.Size-f.DataOffset)
	if _, err := io.CopyBuffer(cw, data, make([]byte, 4<<20)); err != nil {
		return cw.n, fmt.Errorf("copying tensor data: %w", err)
	}
	return cw.n, nil
}

func indexOf(kvs []KV, key string) int {
	for i, kv := range kvs {
		if kv.Key == key {
			return i
		}
	}
	return -1
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
