package store_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// TestReviewComment: a comment is written with the decision it explains and
// never changed afterwards; bad ones are refused by the store and by the
// database for writers that skip the store.
func TestReviewComment(t *testing.T) {
	b := setup(t)
	c := b.config(t, "eu-1", "prod")
	d := b.run(t, c, store.ActionApply, store.StatusInProgress, 1, 0)
	require.NoError(t, b.st.AwaitApproval(b.ctx, d.ID, "agent-1"))

	for _, bad := range []string{"clear \x1b[2J screen", strings.Repeat("x", 2001)} {
		_, err := b.st.Approve(b.ctx, d.ID, "alice", bad)
		require.ErrorIs(t, err, store.ErrInvalid)
	}
	_, err := b.pool.Exec(b.ctx, `UPDATE deployments SET approved_at = now(), approved_by = 'mallory', review_comment = E'bell \x07' WHERE id = $1`, d.ID)
	require.ErrorContains(t, err, "deployments_review_comment", "the database refuses control characters too")

	got, err := b.st.Approve(b.ctx, d.ID, "alice", "  looked at the diff  ")
	require.NoError(t, err)
	require.Equal(t, "looked at the diff", *got.ReviewComment)

	_, err = b.pool.Exec(b.ctx, `UPDATE deployments SET review_comment = 'edited later' WHERE id = $1`, d.ID)
	require.ErrorContains(t, err, "never changed afterwards")

	// No comment: NULL, not an empty string.
	d2 := b.run(t, b.config(t, "eu-1", "staging"), store.ActionApply, store.StatusInProgress, 1, 0)
	require.NoError(t, b.st.AwaitApproval(b.ctx, d2.ID, "agent-1"))
	got, err = b.st.Reject(b.ctx, d2.ID, "bob", "")
	require.NoError(t, err)
	require.Nil(t, got.ReviewComment)
}
