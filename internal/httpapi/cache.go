package httpapi

import (
	"crypto/sha256"
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"
)

// CacheKey identifies one embedding: the model, the input type and the text.
// The text is hashed so a key costs 32 bytes however long the document.
type CacheKey [sha256.Size]byte

// NewCacheKey builds the key of text embedded by model as inputType.
func NewCacheKey(model, inputType, text string) CacheKey {
	h := sha256.New()
	h.Write([]byte(model))
	h.Write([]byte{0})
	h.Write([]byte(inputType))
	h.Write([]byte{0})
	h.Write([]byte(text))
	var k CacheKey
	h.Sum(k[:0])
	return k
}

// Cache holds the most recently used vectors. A nil *Cache is a cache that
// never hits, so callers need no special case when caching is off. Stored
// vectors are shared: callers must not modify them.
type Cache struct {
	lru *lru.Cache[CacheKey, []float32]
}

// NewCache returns a cache of size entries, or nil for size 0.
func NewCache(size int) (*Cache, error) {
	if size <= 0 {
		return nil, nil
	}
	l, err := lru.New[CacheKey, []float32](size)
	if err != nil {
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	return &Cache{lru: l}, nil
}

// Get returns the stored vector for k.
func (c *Cache) Get(k CacheKey) ([]float32, bool) {
	if c == nil {
		return nil, false
	}
	return c.lru.Get(k)
}

// Add stores v under k, evicting the least recently used entry when full.
func (c *Cache) Add(k CacheKey, v []float32) {
	if c != nil {
		c.lru.Add(k, v)
	}
}

// Len is the number of entries stored.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	return c.lru.Len()
}
