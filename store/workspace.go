package store

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// WorkspaceRewrite is an operator's acceptance of a rewritten audit branch
// (grape workspace accept-rewrite).
type WorkspaceRewrite struct {
	ID        int64  `db:"id" json:"id"`
	ClusterID string `db:"cluster_id" json:"cluster_id"`
	// MissingCommit is the commit the agents required until then; nil when
	// none had been recorded.
	MissingCommit *string `db:"missing_commit" json:"missing_commit,omitempty"`
	// AcceptedTip is the branch tip the operator vouched for; nil: whatever
	// the branch holds at the next commit.
	AcceptedTip *string   `db:"accepted_tip" json:"accepted_tip,omitempty"`
	Reason      string    `db:"reason" json:"reason"`
	AcceptedBy  string    `db:"accepted_by" json:"accepted_by"`
	AcceptedAt  time.Time `db:"accepted_at" json:"accepted_at"`
}

const rewriteColumns = `id, cluster_id, missing_commit, accepted_tip, reason, accepted_by, accepted_at`

// historyAnchorSQL is the commit the workspace branch must still contain
// before a cluster's agent builds on it: the newest commit one of its
// deployments made since the last accepted rewrite, else the tip that
// acceptance vouched for, else none ("").
//
// "Newest" is by the deployment's start: two agents of a fleet may finish
// their commits in the other order, and then the older of the two is
// checked — still a commit the branch must contain, so the check is never
// wrong, only one commit less strict for that moment.
const historyAnchorSQL = `
WITH acc AS (
    SELECT accepted_tip, accepted_at FROM workspace_rewrites
    WHERE cluster_id = $1 ORDER BY accepted_at DESC, id DESC LIMIT 1)
SELECT coalesce(
    (SELECT d.commit_sha FROM deployments d
     WHERE d.cluster_id = $1 AND d.commit_sha IS NOT NULL AND d.source_commit IS NULL AND d.action <> 'drift'
       AND (NOT EXISTS (SELECT 1 FROM acc) OR d.started_at > (SELECT accepted_at FROM acc))
     ORDER BY d.started_at DESC LIMIT 1),
    (SELECT accepted_tip FROM acc),
    '')`

// HistoryAnchor returns the commit the cluster's workspace branch must still
// contain (see historyAnchorSQL), or "" when nothing is required yet.
func (s *Store) HistoryAnchor(ctx context.Context, clusterID string) (string, error) {
	var sha string
	if err := s.db().QueryRow(ctx, historyAnchorSQL, clusterID).Scan(&sha); err != nil {
		return "", fmt.Errorf("reading the last commit of cluster %s: %w", clusterID, err)
	}
	return sha, nil
}

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// AcceptRewriteParams is what an operator states when accepting a rewrite.
type AcceptRewriteParams struct {
	ClusterID string
	// Tip, if set, is the commit (40 hex digits) the operator trusts: the
	// next commit must build on it.
	Tip    string
	Reason string
	By     string
}

// AcceptRewrite records that the cluster's audit branch was rewritten on
// purpose: from now on its agents no longer require the commit they
// required until now (recorded as MissingCommit), only Tip if given.
func (s *Store) AcceptRewrite(ctx context.Context, p AcceptRewriteParams) (WorkspaceRewrite, error) {
	p.Reason, p.By, p.Tip = strings.TrimSpace(p.Reason), strings.TrimSpace(p.By), strings.ToLower(strings.TrimSpace(p.Tip))
	switch {
	case p.Reason == "":
		return WorkspaceRewrite{}, fmt.Errorf("reason: %w: say why the history was rewritten (--reason \"…\"); it is kept with your name", ErrInvalid)
	case len(p.Reason) > 2000:
		return WorkspaceRewrite{}, fmt.Errorf("reason: %w: at most 2000 characters", ErrInvalid)
	case p.By == "" || len(p.By) > 200:
		return WorkspaceRewrite{}, fmt.Errorf("accepted by: %w: name who accepts the rewrite (--who, 1-200 characters)", ErrInvalid)
	case p.Tip != "" && !fullSHA.MatchString(p.Tip):
		return WorkspaceRewrite{}, fmt.Errorf("tip %q: %w: give the full 40-digit commit id the deployment error named", p.Tip, ErrInvalid)
	}
	var tip *string
	if p.Tip != "" {
		tip = &p.Tip
	}
	rows, err := s.db().Query(ctx, `
INSERT INTO workspace_rewrites (cluster_id, missing_commit, accepted_tip, reason, accepted_by)
SELECT $1, nullif((`+historyAnchorSQL+`), ''), $2, $3, $4
RETURNING `+rewriteColumns, p.ClusterID, tip, p.Reason, p.By)
	if err != nil {
		return WorkspaceRewrite{}, fmt.Errorf("recording accepted rewrite of cluster %s: %w", p.ClusterID, err)
	}
	w, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[WorkspaceRewrite])
	if err != nil {
		if code, _ := pgCode(err); code == codeForeignKeyViolation {
			return WorkspaceRewrite{}, fmt.Errorf("cluster %q: %w", p.ClusterID, ErrNotFound)
		}
		return WorkspaceRewrite{}, fmt.Errorf("recording accepted rewrite of cluster %s: %w", p.ClusterID, err)
	}
	return w, nil
}

// ListRewrites returns the cluster's accepted rewrites, newest first.
func (s *Store) ListRewrites(ctx context.Context, clusterID string) ([]WorkspaceRewrite, error) {
	rows, err := s.db().Query(ctx, `SELECT `+rewriteColumns+` FROM workspace_rewrites
WHERE cluster_id = $1 ORDER BY accepted_at DESC, id DESC`, clusterID)
	if err != nil {
		return nil, fmt.Errorf("listing accepted rewrites of cluster %s: %w", clusterID, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[WorkspaceRewrite])
	if err != nil {
		return nil, fmt.Errorf("listing accepted rewrites of cluster %s: %w", clusterID, err)
	}
	return out, nil
}

// Ended is a deployment that reached an end, or stopped awaiting approval,
// with what its git note records besides the row: the config's name and,
// for a drift check, its report.
type Ended struct {
	Deployment
	ConfigName   string          `db:"config_name"`
	DriftStatus  *DriftStatus    `db:"drift_status"`
	DriftDetails json.RawMessage `db:"drift_details"`
}

// RecentEnds lists the cluster's deployments with a commit that finished at
// or after since, and those awaiting approval: the newest 500, returned
// oldest first so notes list events in the order they happened:
// the agent writes each one's outcome into its commit's git note — its own
// runs, and runs a person rejected or a rescuer ended.
func (s *Store) RecentEnds(ctx context.Context, clusterID string, since time.Time) ([]Ended, error) {
	rows, err := s.db().Query(ctx, `
WITH d AS (
    SELECT `+deploymentColumns+` FROM deployments
    WHERE cluster_id = $1 AND commit_sha IS NOT NULL
      AND ((finished_at IS NOT NULL AND finished_at >= $2) OR status = 'awaiting_approval'))
SELECT d.*, c.name AS config_name, r.status AS drift_status, r.details AS drift_details
FROM d JOIN configs c ON c.id = d.config_id
LEFT JOIN LATERAL (SELECT status, details FROM drift_reports
                   WHERE deployment_id = d.id ORDER BY checked_at DESC LIMIT 1) r ON true
ORDER BY coalesce(d.finished_at, d.updated_at) DESC, d.id DESC
LIMIT 500`, clusterID, since)
	if err != nil {
		return nil, fmt.Errorf("listing ended deployments of cluster %s: %w", clusterID, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[Ended])
	if err != nil {
		return nil, fmt.Errorf("listing ended deployments of cluster %s: %w", clusterID, err)
	}
	slices.Reverse(out)
	return out, nil
}
