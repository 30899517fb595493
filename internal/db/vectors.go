// Reading the stored vectors, for the search index.

package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// VectorRow is a row as the search index tracks it, without its blob.
type VectorRow struct {
	ID        int64          `db:"id"`
	Valid     sql.NullBool   `db:"is_valid_project"`
	HasVector bool           `db:"has_vector"` // description_embedding holds a blob
	Hash      sql.NullString `db:"content_hash"`
	Digest    sql.NullString `db:"model_digest"`
}

// StoredVector is a row's vector as stored, with what a search answers.
type StoredVector struct {
	ID     int64          `db:"id"`
	Title  sql.NullString `db:"title"`
	Valid  sql.NullBool   `db:"is_valid_project"`
	Hash   sql.NullString `db:"content_hash"`
	Digest sql.NullString `db:"model_digest"`
	Blob   []byte         `db:"description_embedding"`
}

const selectVectorRows = `
SELECT p.id, p.is_valid_project, typeof(p.description_embedding) = 'blob' AS has_vector, s.content_hash, s.model_digest
FROM waywo_projects p LEFT JOIN embed_sync_state s ON s.project_id = p.id ORDER BY p.id`

const selectStoredVectors = `
SELECT p.id, p.title, p.is_valid_project, s.content_hash, s.model_digest, p.description_embedding
FROM waywo_projects p LEFT JOIN embed_sync_state s ON s.project_id = p.id
WHERE typeof(p.description_embedding) = 'blob' AND p.id IN (?)`

// EachVectorRow calls fn for every row in id order, reading as it goes.
func (s *Store) EachVectorRow(ctx context.Context, fn func(VectorRow) error) error {
	p, err := s.pools(ctx)
	if err != nil {
		return err
	}
	rows, err := p.r.QueryxContext(ctx, selectVectorRows)
	if err != nil {
		return fmt.Errorf("scan vectors: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r VectorRow
		if err := rows.StructScan(&r); err != nil {
			return fmt.Errorf("scan vectors: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan vectors: %w", err)
	}
	return nil
}

// StoredVectors reads the vectors of the given rows; rows without one, or
// with no such id, are absent.
func (s *Store) StoredVectors(ctx context.Context, ids []int64) ([]StoredVector, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	q, args, err := sqlx.In(selectStoredVectors, ids)
	if err != nil {
		return nil, err
	}
	p, err := s.pools(ctx)
	if err != nil {
		return nil, err
	}
	var out []StoredVector
	err = retryBusy(ctx, s.log, "read vectors", func() error {
		out = out[:0]
		return p.r.SelectContext(ctx, &out, q, args...)
	})
	if err != nil {
		return nil, fmt.Errorf("read vectors: %w", err)
	}
	return out, nil
}
