package pipeline

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// TestLeftBy: which earlier deployment left a state lock. Only one whose
// terraform may have held the lock (lost agent, terraform failure, timeout),
// and only if the lock was created while it ran (give or take lockSkew of
// clock difference between the agent and the database).
func TestLeftBy(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	self := uuid.New()
	dep := func(kind store.ErrorKind, started, finished time.Duration) store.Deployment {
		s, f := t0.Add(started), t0.Add(finished)
		return store.Deployment{ID: uuid.New(), ErrorKind: &kind, StartedAt: &s, FinishedAt: &f}
	}
	lost := dep(store.KindAgentLost, 0, 2*time.Minute)
	notReleased := dep(store.KindPlan, 0, 2*time.Minute)
	notReleased.Error = ptr.To("terraform plan " + runner.LockNotReleased + ": connection refused")
	planFailed := dep(store.KindPlan, 0, 2*time.Minute)
	later := dep(store.KindTimeout, 4*time.Minute, 6*time.Minute)
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
		{"a deployment whose terraform could not release the lock", time.Minute, []store.Deployment{notReleased}, &notReleased},
		{"a deployment whose terraform plan failed", time.Minute, []store.Deployment{planFailed}, &planFailed},
		{"a deployment that failed before terraform ran", time.Minute, []store.Deployment{dep(store.KindGit, 0, 2*time.Minute), dep(store.KindBadConfig, 0, 2*time.Minute)}, nil},
		{"a deployment that itself found the state locked", time.Minute, []store.Deployment{dep(store.KindStateLock, 0, 2*time.Minute)}, nil},
		{"the one running when the lock was created", 5 * time.Minute, []store.Deployment{dep(store.KindPlan, 8*time.Minute, 9*time.Minute), later, lost}, &later},
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

// TestStaleLockReleasable: the agent releases a lock on its own only when it
// is a plan lock whose terraform is known to have ended without releasing
// it; a lock from an interrupted apply is left for a person.
func TestStaleLockReleasable(t *testing.T) {
	lost := store.Deployment{ErrorKind: ptr.To(store.KindAgentLost), Error: ptr.To("agent a lost during apply: …")}
	notReleased := store.Deployment{ErrorKind: ptr.To(store.KindPlan), Error: ptr.To("terraform plan " + runner.LockNotReleased + ": …")}
	cases := []struct {
		name string
		lock *staleLock
		want bool
	}{
		{"plan lock of an earlier attempt of this deployment", &staleLock{lock: &runner.LockInfo{Operation: "OperationTypePlan"}, earlierAttempt: true}, true},
		{"plan lock terraform could not release", &staleLock{lock: &runner.LockInfo{Operation: "OperationTypePlan"}, by: notReleased}, true},
		{"apply lock terraform could not release", &staleLock{lock: &runner.LockInfo{Operation: "OperationTypeApply"}, by: notReleased}, false},
		{"apply lock of an agent lost during apply", &staleLock{lock: &runner.LockInfo{Operation: "OperationTypeApply"}, by: lost}, false},
		{"plan lock of another deployment's lost agent", &staleLock{lock: &runner.LockInfo{Operation: "OperationTypePlan"}, by: lost}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.lock.releasable())
		})
	}
}
