// Reading the stored vectors, for the search index.

package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"
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
	r, err := s.VectorReader(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.StoredVectors(ctx, ids)
}

// VectorReader reads stored vectors on one connection until it is closed:
// the reads of one search share that connection's page cache (the table's
// inner pages), where each read on a fresh connection would read them from
// the file again. Close it when the search ends; like every connection
// here, it is not kept between uses.
type VectorReader struct {
	conn *sqlx.Conn
	log  *zap.Logger
}

// VectorReader opens a reader on the file now at the path.
func (s *Store) VectorReader(ctx context.Context) (*VectorReader, error) {
	p, err := s.pools(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := p.r.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("read vectors: %w", err)
	}
	return &VectorReader{conn: conn, log: s.log}, nil
}

// StoredVectors reads the vectors of the given rows; rows without one, or
// with no such id, are absent.
func (r *VectorReader) StoredVectors(ctx context.Context, ids []int64) ([]StoredVector, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	q, args, err := sqlx.In(selectStoredVectors, ids)
	if err != nil {
		return nil, err
	}
	var out []StoredVector
	err = retryBusy(ctx, r.log, "read vectors", func() error {
		out = out[:0]
		return r.conn.SelectContext(ctx, &out, q, args...)
	})
	if err != nil {
		return nil, fmt.Errorf("read vectors: %w", err)
	}
	return out, nil
}

// Close returns the connection, which closes it.
func (r *VectorReader) Close() error { return r.conn.Close() }
