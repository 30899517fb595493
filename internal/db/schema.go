// The backend's table as we expect it, and ours beside it.

package db

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
)

// BackendSchema is the WAYWO backend's waywo_projects table (SQLAlchemy
// model WaywoProjectDB, src/db/models.py), created only when the file has
// no such table so that the embedded default works alone. The foreign key
// to waywo_comments is left out: that table is the backend's to create.
// source, umap_x and umap_y are newer backend columns, nullable here.
const BackendSchema = `
CREATE TABLE waywo_projects (
	id INTEGER NOT NULL,
	source_comment_id INTEGER NOT NULL,
	is_valid_project BOOLEAN NOT NULL,
	invalid_reason VARCHAR(500),
	title VARCHAR(500) NOT NULL,
	short_description VARCHAR(200) NOT NULL,
	description TEXT NOT NULL,
	hashtags TEXT NOT NULL,
	project_urls TEXT,
	url_summaries TEXT,
	primary_url TEXT,
	url_contents TEXT,
	idea_score INTEGER NOT NULL,
	complexity_score INTEGER NOT NULL,
	workflow_logs TEXT,
	description_embedding BLOB,
	is_bookmarked BOOLEAN NOT NULL,
	screenshot_path TEXT,
	source VARCHAR(50),
	umap_x FLOAT,
	umap_y FLOAT,
	created_at DATETIME NOT NULL,
	processed_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_waywo_projects_source_comment_id ON waywo_projects (source_comment_id);
CREATE INDEX ix_waywo_projects_idea_score ON waywo_projects (idea_score);
CREATE INDEX ix_waywo_projects_complexity_score ON waywo_projects (complexity_score);
CREATE INDEX ix_waywo_projects_is_valid ON waywo_projects (is_valid_project);
CREATE INDEX ix_waywo_projects_created_at ON waywo_projects (created_at);
`

// InsertProject is the statement that adds a minimal row to the backend's
// table: its arguments are id, title, description and hashtags, and it
// fills the backend's other NOT NULL columns. Tests, the benchmark and the
// fault suite play the backend with it.
const InsertProject = `INSERT INTO waywo_projects (id, source_comment_id, is_valid_project, title, short_description,
	description, hashtags, idea_score, complexity_score, is_bookmarked, created_at, processed_at)
	VALUES (?, 1, 1, ?, '', ?, ?, 5, 5, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00')`

// stateSchema is ours. content_hash, model, dims and embedded_at describe
// the blob we last wrote; failed_hash, last_error and failed_at the last
// failure. failed_hash is the content that failed for good (a malformed
// row, a text the model refuses); it is NULL for failures worth retrying.
const stateSchema = `
CREATE TABLE IF NOT EXISTS embed_sync_state (
	project_id INTEGER PRIMARY KEY,
	content_hash TEXT,
	model TEXT,
	dims INTEGER,
	embedded_at TEXT,
	failed_hash TEXT,
	last_error TEXT,
	failed_at TEXT,
	model_digest TEXT,
	ollama_version TEXT
);
`

// addedStateColumns are embed_sync_state columns added after its first
// release: a file from then gets them at open (the table is ours).
var addedStateColumns = []string{"model_digest TEXT", "ollama_version TEXT"}

// requiredColumns are the waywo_projects columns the sync reads or writes
// (is_valid_project: the search's filter, which the sync carries into the
// index).
var requiredColumns = []string{"id", "title", "description", "hashtags", "description_embedding", "is_valid_project"}

func addColumns(ctx context.Context, tx *sqlx.Tx) error {
	var cols []string
	if err := tx.SelectContext(ctx, &cols, "SELECT name FROM pragma_table_info('embed_sync_state')"); err != nil {
		return err
	}
	for _, def := range addedStateColumns {
		if !slices.Contains(cols, strings.Fields(def)[0]) {
			if _, err := tx.ExecContext(ctx, "ALTER TABLE embed_sync_state ADD COLUMN "+def); err != nil {
				return fmt.Errorf("add embed_sync_state.%s: %w", def, err)
			}
		}
	}
	return nil
}

func checkColumns(ctx context.Context, tx *sqlx.Tx) error {
	var cols []string
	if err := tx.SelectContext(ctx, &cols, "SELECT name FROM pragma_table_info('waywo_projects')"); err != nil {
		return err
	}
	have := make(map[string]bool, len(cols))
	for _, c := range cols {
		have[strings.ToLower(c)] = true
	}
	var missing []string
	for _, c := range requiredColumns {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("waywo_projects lacks column(s) %s; is this the WAYWO database?", strings.Join(missing, ", "))
	}
	return nil
}
