package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Stream says where a log line came from.
type Stream string

const (
	StreamStdout Stream = "stdout"
	StreamStderr Stream = "stderr"
	// StreamAgent lines are Grape's own: phase changes and decisions.
	StreamAgent Stream = "agent"
)

// LogLine is one stored line of a deployment's output.
type LogLine struct {
	DeploymentID uuid.UUID `db:"deployment_id"`
	Seq          int64     `db:"seq"`
	Stream       Stream    `db:"stream"`
	Line         string    `db:"line"`
	CreatedAt    time.Time `db:"created_at"`
}

// ReadLogs returns up to limit lines of a deployment with seq > afterSeq, in order.
func (s *Store) ReadLogs(ctx context.Context, id uuid.UUID, afterSeq int64, limit int) ([]LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db().Query(ctx, `SELECT deployment_id, seq, stream, line, created_at FROM deployment_logs
WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, id, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("reading logs of deployment %s: %w", id, err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByName[LogLine])
}

// LastSeq returns the highest stored seq of a deployment (0 when none).
func (s *Store) LastSeq(ctx context.Context, id uuid.UUID) (int64, error) {
	var seq int64
	if err := s.db().QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM deployment_logs WHERE deployment_id = $1`, id).Scan(&seq); err != nil {
		return 0, fmt.Errorf("reading last log seq of deployment %s: %w", id, err)
	}
	return seq, nil
}
