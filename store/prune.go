package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// PruneOptions says what grape prune deletes.
type PruneOptions struct {
	// LogsBefore: the log lines of deployments that finished before it go;
	// the deployment rows stay, with logs_pruned_at set.
	LogsBefore time.Time
	// HistoryBefore, when set, also deletes drift reports checked and
	// deployments finished before it, except what the agent still needs: per
	// config the latest succeeded apply (drift checks and remediation run its
	// commit), the latest other deployment (the drift scheduler's idleness)
	// and the latest drift report (the config's drift status).
	HistoryBefore time.Time
	// DryRun counts what would go and deletes nothing.
	DryRun bool
	// BatchLines bounds the lines one DELETE removes (default 2,000): each
	// batch is its own short transaction, so live appends to running
	// deployments (other keys of the same index) never wait on a lock.
	BatchLines int
	// Rest is how long the prune pauses after each batch, as a multiple of
	// the time the batch took (default 1: the prune uses the disk at most
	// half the time, whatever the server's speed, so live appends keep
	// their latency; measured in BenchmarkPruneWhileAppending). Negative:
	// no pause.
	Rest float64
}

// PruneResult counts what went (or, in a dry run, would go).
type PruneResult struct {
	LogDeployments     int64 // deployments whose logs were pruned
	LogLines           int64
	DriftReports       int64
	DeletedDeployments int64
	// Notifications are webhook outbox rows: delivered before the log
	// cutoff, and (with a history cutoff) given up or never delivered
	// before it.
	Notifications int64
}

// pruneDeploymentsPerPass bounds how many deployments one pass lists.
const pruneDeploymentsPerPass = 200

// Prune deletes old log lines (and history, see PruneOptions) in bounded
// batches. Running and parked deployments have no finished_at and are never
// touched. It can be stopped at any point: every batch commits on its own,
// and a deployment is marked pruned only once its last line is gone, so the
// next run carries on.
func (s *Store) Prune(ctx context.Context, o PruneOptions) (PruneResult, error) {
	var res PruneResult
	if o.LogsBefore.IsZero() {
		return res, fmt.Errorf("prune: %w: no cutoff for logs (--older-than)", ErrInvalid)
	}
	if !o.HistoryBefore.IsZero() && o.HistoryBefore.After(o.LogsBefore) {
		return res, fmt.Errorf("prune: %w: the history cutoff must be older than the log cutoff (--history longer than --older-than)", ErrInvalid)
	}
	if o.BatchLines <= 0 {
		o.BatchLines = 2000
	}
	if o.Rest == 0 {
		o.Rest = 1
	}
	if o.DryRun {
		return s.pruneCount(ctx, o)
	}
	for {
		rows, err := s.db().Query(ctx, `SELECT id FROM deployments
WHERE finished_at < $1 AND logs_pruned_at IS NULL ORDER BY finished_at LIMIT $2`, o.LogsBefore, pruneDeploymentsPerPass)
		if err != nil {
			return res, fmt.Errorf("listing deployments to prune: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return res, fmt.Errorf("listing deployments to prune: %w", err)
		}
		for _, id := range ids {
			n, err := s.pruneLogsOf(ctx, id, o.BatchLines, o.Rest)
			res.LogLines += n
			if err != nil {
				return res, err
			}
			res.LogDeployments++
		}
		if len(ids) < pruneDeploymentsPerPass {
			break
		}
	}
	var err error
	if res.Notifications, err = s.deleteInBatches(ctx, "delivered webhook events", pruneDeliveredSQL, o.LogsBefore); err != nil {
		return res, err
	}
	if o.HistoryBefore.IsZero() {
		return res, nil
	}
	dead, err := s.deleteInBatches(ctx, "undelivered webhook events", pruneUndeliveredSQL, o.HistoryBefore)
	res.Notifications += dead
	if err != nil {
		return res, err
	}
	if res.DriftReports, err = s.deleteInBatches(ctx, "drift reports", pruneDriftSQL, o.HistoryBefore); err != nil {
		return res, err
	}
	res.DeletedDeployments, err = s.deleteInBatches(ctx, "deployments", pruneDeploymentsSQL, o.HistoryBefore)
	return res, err
}

// pruneLogsOf deletes one deployment's lines, oldest first, a batch per
// statement, then marks it pruned.
func (s *Store) pruneLogsOf(ctx context.Context, id uuid.UUID, batch int, rest float64) (int64, error) {
	var total int64
	for {
		start := time.Now()
		tag, err := s.db().Exec(ctx, `DELETE FROM deployment_logs WHERE deployment_id = $1 AND seq IN (
    SELECT seq FROM deployment_logs WHERE deployment_id = $1 ORDER BY seq LIMIT $2)`, id, batch)
		if err != nil {
			return total, fmt.Errorf("pruning log lines of deployment %s: %w", id, err)
		}
		total += tag.RowsAffected()
		if err := pause(ctx, time.Duration(float64(time.Since(start))*rest)); err != nil {
			return total, fmt.Errorf("pruning log lines of deployment %s: %w", id, err)
		}
		if tag.RowsAffected() < int64(batch) {
			break
		}
	}
	if _, err := s.db().Exec(ctx, `UPDATE deployments SET logs_pruned_at = now()
WHERE id = $1 AND finished_at IS NOT NULL AND logs_pruned_at IS NULL`, id); err != nil {
		return total, fmt.Errorf("marking deployment %s pruned: %w", id, err)
	}
	return total, nil
}

// pause sleeps for d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// The rows the agent still needs are kept (see PruneOptions.HistoryBefore).
const (
	keepDeployments = `
    (SELECT DISTINCT ON (config_id) id FROM deployments
      WHERE action = 'apply' AND status = 'succeeded' AND commit_sha IS NOT NULL
      ORDER BY config_id, finished_at DESC)
    UNION
    (SELECT DISTINCT ON (config_id) id FROM deployments WHERE action <> 'drift'
      ORDER BY config_id, created_at DESC, id DESC)`
	pruneDeploymentsSQL = `DELETE FROM deployments WHERE id IN (
    SELECT id FROM deployments WHERE finished_at < $1 AND id NOT IN (` + keepDeployments + `)
    LIMIT $2)`
	pruneDriftSQL = `DELETE FROM drift_reports WHERE id IN (
    SELECT id FROM drift_reports WHERE checked_at < $1 AND id NOT IN (
        SELECT DISTINCT ON (config_id) id FROM drift_reports ORDER BY config_id, checked_at DESC)
    LIMIT $2)`
)

// The webhook outbox: a delivered event is done with once delivered; one
// that was given up, or never delivered (its cluster had no agent), is kept
// as long as history, for whoever looks into why it did not arrive. Both
// walk notify_outbox_created, delivered_at and gave_up_at being later than
// created_at.
const (
	deliveredBefore   = `created_at < $1 AND delivered_at < $1`
	undeliveredBefore = `created_at < $1 AND delivered_at IS NULL
      AND (gave_up_at < $1 OR gave_up_at IS NULL AND (locked_until IS NULL OR locked_until < now()))`
	pruneDeliveredSQL = `DELETE FROM notify_outbox WHERE id IN (
    SELECT id FROM notify_outbox WHERE ` + deliveredBefore + ` LIMIT $2)`
	pruneUndeliveredSQL = `DELETE FROM notify_outbox WHERE id IN (
    SELECT id FROM notify_outbox WHERE ` + undeliveredBefore + ` LIMIT $2)`
)

// historyBatch bounds the rows of one history DELETE. A deployment's delete
// also deletes its remaining log lines (by trigger); they are normally
// pruned already, as the history cutoff is the older one.
const historyBatch = 500

func (s *Store) deleteInBatches(ctx context.Context, what, query string, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.db().Exec(ctx, query, before, historyBatch)
		if err != nil {
			return total, fmt.Errorf("pruning %s: %w", what, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < historyBatch {
			return total, nil
		}
	}
}

// pruneCount answers a dry run.
func (s *Store) pruneCount(ctx context.Context, o PruneOptions) (PruneResult, error) {
	var res PruneResult
	err := s.db().QueryRow(ctx, `SELECT count(*), coalesce(sum(
    (SELECT count(*) FROM deployment_logs l WHERE l.deployment_id = d.id)), 0)::bigint
FROM deployments d WHERE finished_at < $1 AND logs_pruned_at IS NULL`, o.LogsBefore).Scan(&res.LogDeployments, &res.LogLines)
	if err != nil {
		return res, fmt.Errorf("counting logs to prune: %w", err)
	}
	if err := s.db().QueryRow(ctx, `SELECT count(*) FROM notify_outbox WHERE `+deliveredBefore, o.LogsBefore).Scan(&res.Notifications); err != nil {
		return res, fmt.Errorf("counting webhook events to prune: %w", err)
	}
	if o.HistoryBefore.IsZero() {
		return res, nil
	}
	var dead int64
	if err := s.db().QueryRow(ctx, `SELECT count(*) FROM notify_outbox WHERE `+undeliveredBefore, o.HistoryBefore).Scan(&dead); err != nil {
		return res, fmt.Errorf("counting webhook events to prune: %w", err)
	}
	res.Notifications += dead
	err = s.db().QueryRow(ctx, `SELECT
    (SELECT count(*) FROM drift_reports WHERE checked_at < $1 AND id NOT IN (
        SELECT DISTINCT ON (config_id) id FROM drift_reports ORDER BY config_id, checked_at DESC)),
    (SELECT count(*) FROM deployments WHERE finished_at < $1 AND id NOT IN (`+keepDeployments+`))`,
		o.HistoryBefore).Scan(&res.DriftReports, &res.DeletedDeployments)
	if err != nil {
		return res, fmt.Errorf("counting history to prune: %w", err)
	}
	return res, nil
}
