package reconciler

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// TestLeftBy: which earlier deployment left a state lock. Only one whose
// agent was lost, and only if the lock was created while it ran (give or
// take lockSkew of clock difference between the agent and the database).
func TestLeftBy(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	self := uuid.New()
	dep := func(kind store.ErrorKind, started, finished time.Duration) store.Deployment {
		s, f := t0.Add(started), t0.Add(finished)
		return store.Deployment{ID: uuid.New(), ErrorKind: &kind, StartedAt: &s, FinishedAt: &f}
	}
	lost := dep(store.KindAgentLost, 0, 2*time.Minute)
	cases := []struct {
		name    string
		created time.Duration
		failed  []store.Deployment
		want    *store.Deployment
	}{
		{"created while the lost deployment ran", time.Minute, []store.Deployment{lost}, &lost},
		{"created within the skew after it ended", 2*time.Minute + 20*time.Second, []store.Deployment{lost}, &lost},
		{"created long after it ended: someone else's", 10 * time.Minute, []store.Deployment{lost}, nil},
		{"created before it started", -time.Minute, []store.Deployment{lost}, nil},
		{"a deployment that failed for another reason", time.Minute, []store.Deployment{dep(store.KindPlan, 0, 2*time.Minute)}, nil},
		{"the deployment itself", time.Minute, []store.Deployment{{ID: self, ErrorKind: lost.ErrorKind, StartedAt: lost.StartedAt, FinishedAt: lost.FinishedAt}}, nil},
		{"no history", time.Minute, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := leftBy(t0.Add(tc.created), self, tc.failed)
			if tc.want == nil {
				require.False(t, ok, "attributed to %s", got.ID)
				return
			}
			require.True(t, ok)
			require.Equal(t, tc.want.ID, got.ID)
		})
	}
}

func TestParseLockCreated(t *testing.T) {
	for _, s := range []string{"2026-11-27 08:37:55.346217783 +0000 UTC", "2026-11-27T08:37:55.346217783Z"} {
		got, err := parseLockCreated(s)
		require.NoError(t, err, s)
		require.Equal(t, time.Date(2026, 11, 27, 8, 37, 55, 346217783, time.UTC), got.UTC())
	}
	_, err := parseLockCreated("yesterday")
	require.Error(t, err)
}
