package httpapi

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCache(t *testing.T) {
	t.Parallel()
	c, err := NewCache(2)
	require.NoError(t, err)
	a, b, q := NewCacheKey("m", "document", "a"), NewCacheKey("m", "document", "b"), NewCacheKey("m", "query", "a")
	require.NotEqual(t, a, q, "input type is part of the key")
	require.NotEqual(t, a, NewCacheKey("m2", "document", "a"), "model is part of the key")
	require.NotEqual(t, NewCacheKey("m", "document", "ab"), NewCacheKey("m", "documenta", "b"), "fields cannot run together")

	_, ok := c.Get(a)
	require.False(t, ok)
	c.Add(a, []float32{1})
	c.Add(b, []float32{2})
	v, ok := c.Get(a)
	require.True(t, ok)
	require.Equal(t, []float32{1}, v)
	c.Add(q, []float32{3}) // evicts b, the least recently used
	_, ok = c.Get(b)
	require.False(t, ok)
	require.Equal(t, 2, c.Len())

	var off *Cache
	off, err = NewCache(0)
	require.NoError(t, err)
	off.Add(a, []float32{1})
	_, ok = off.Get(a)
	require.False(t, ok)
	require.Zero(t, off.Len())
}
