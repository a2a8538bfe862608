package gitstore

import (
	"context"
	"fmt"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// HistoryError means the workspace branch no longer contains a commit Grape
// recorded as pushed (Change.Require): someone rewrote the audit history,
// typically with a force-push. Nothing was committed; building on the new
// history would hide the rewrite behind a fresh commit.
type HistoryError struct {
	// Remote is the workspace URL (credentials redacted) or local directory.
	Remote string
	Branch string
	// Missing is the required commit; Tip the branch's tip now ("" when the
	// branch is gone).
	Missing string
	Tip     string
	// ClusterID names the cluster in the command that accepts the rewrite.
	ClusterID string
}

func (e *HistoryError) Error() string {
	tip := e.Tip
	if tip == "" {
		tip = "(the branch was deleted)"
	}
	return fmt.Sprintf("git history rewritten: branch %s of %s no longer contains commit %s, the last one Grape "+
		"recorded for cluster %s; its tip is now %s. Nothing was committed or applied. Find out who rewrote it "+
		"(branch protection should forbid force-pushes); if the rewrite was intended, re-establish trust with "+
		"`grape workspace accept-rewrite --cluster %s --tip %s --reason \"…\"`",
		e.Branch, e.Remote, e.Missing, e.ClusterID, tip, e.ClusterID, e.Tip)
}

// clockSkew is how much older than the required commit an ancestor may
// claim to be: commits of a fleet come from several clocks. The walk stops
// descending below it.
const clockSkew = 24 * time.Hour

// contains reports whether commit want is tip or one of its ancestors.
// Every object reachable from tip is in the clone (the fetch brought it),
// so a want the clone lacks cannot be in tip's history. The walk prunes
// commits older than want by more than clockSkew, so its cost follows the
// commits since want, not the whole history.
func (s *Store) contains(ctx context.Context, tip, want plumbing.Hash) (bool, error) {
	if tip == want {
		return true, nil
	}
	if tip.IsZero() {
		return false, nil
	}
	found := false
	err := s.withObjects(ctx, func() error {
		if !s.hasObject(want) {
			return nil
		}
		w, err := s.commitObject(want)
		if err != nil {
			return err
		}
		oldest := w.Committer.When.Add(-clockSkew)
		seen := map[plumbing.Hash]bool{}
		queue := []plumbing.Hash{tip}
		for len(queue) > 0 {
			h := queue[0]
			queue = queue[1:]
			if seen[h] {
				continue
			}
			seen[h] = true
			if h == want {
				found = true
				return nil
			}
			c, err := s.commitObject(h)
			if err != nil {
				return err
			}
			if c.Committer.When.Before(oldest) {
				continue
			}
			queue = append(queue, c.ParentHashes...)
		}
		return nil
	})
	return found, err
}

// checkHistory fails with a *HistoryError when tip does not contain
// c.Require.
func (s *Store) checkHistory(ctx context.Context, c Change, tip plumbing.Hash) error {
	if c.Require == "" {
		return nil
	}
	want := plumbing.NewHash(c.Require)
	ok, err := s.contains(ctx, tip, want)
	if err != nil || ok {
		return err
	}
	where := s.opts.Dir
	if s.remote != nil {
		where = s.remote.url.display
	}
	tipStr := ""
	if !tip.IsZero() {
		tipStr = tip.String()
	}
	s.log.Warn("git history rewritten: the branch lost a commit Grape recorded", "url", where,
		"branch", s.opts.Branch, "missing", c.Require, "tip", tipStr, "cluster", c.ClusterID)
	return &HistoryError{Remote: where, Branch: s.opts.Branch, Missing: c.Require, Tip: tipStr, ClusterID: c.ClusterID}
}

// isFullSHA says whether s is a full lowercase hex SHA-1.
func isFullSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
