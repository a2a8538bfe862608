package drift

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

func TestParseSchedule(t *testing.T) {
	for _, tc := range []struct {
		spec string
		err  string
		off  bool
	}{
		{spec: "@every 6h"},
		{spec: "0 */6 * * *"},
		{spec: "@daily"},
		{spec: "off", off: true},
		{spec: "", err: "empty drift schedule"},
		{spec: "every six hours", err: `drift schedule "every six hours"`},
		{spec: "* * * *", err: "expected exactly 5 fields"},
		{spec: "0 0 0 * * *", err: "expected exactly 5 fields"},
		{spec: "@every 10s", err: "more often than once a minute"},
		{spec: "61 * * * *", err: "end of range (61) above maximum (59)"},
	} {
		s, err := ParseSchedule(tc.spec)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.spec)
			continue
		}
		require.NoError(t, err, tc.spec)
		require.Equal(t, tc.off, s.Off(), tc.spec)
	}
}

func TestJitterIsStableAndBounded(t *testing.T) {
	id := uuid.NewString()
	j := Jitter(id, 6*time.Hour)
	require.Equal(t, j, Jitter(id, 6*time.Hour))
	require.Less(t, j, 15*time.Minute)
	require.Less(t, Jitter(id, time.Hour), 6*time.Minute)
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		seen[Jitter(uuid.NewString(), 6*time.Hour)] = true
	}
	require.Greater(t, len(seen), 40, "configs are spread out")
}

func TestDecide(t *testing.T) {
	def, err := ParseSchedule("@every 6h")
	require.NoError(t, err)
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	commit := "0123456789abcdef0123456789abcdef01234567"
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	cfgID := uuid.MustParse("7b0e5f0e-3f57-4a55-9d4c-3d0e4b6f8a11") // fixed: its jitter is fixed too
	jitter := Jitter(cfgID.String(), 6*time.Hour)
	dep := func(a store.Action, s store.Status, finished *time.Time) *store.Deployment {
		return &store.Deployment{ID: uuid.New(), Action: a, Status: s, FinishedAt: finished}
	}
	sched := func(s string) *string { return &s }
	cases := []struct {
		name   string
		c      store.DriftCandidate
		check  bool
		reason string
	}{
		{"applied long ago, never checked", store.DriftCandidate{LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(7*time.Hour)), LastAppliedCommit: &commit}, true, "due since"},
		{"checked recently", store.DriftCandidate{LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(20*time.Hour)), LastAppliedCommit: &commit, LastCheck: at(time.Hour)}, false, "next check due at"},
		{"checked past the interval plus jitter", store.DriftCandidate{LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(20*time.Hour)), LastAppliedCommit: &commit, LastCheck: at(6*time.Hour + jitter + time.Second)}, true, "due since"},
		{"checked past the interval, within jitter", store.DriftCandidate{LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(20*time.Hour)), LastAppliedCommit: &commit, LastCheck: at(6*time.Hour + jitter - time.Second)}, jitter == 0, ""},
		{"last deployment failed", store.DriftCandidate{LastDeployment: dep(store.ActionApply, store.StatusFailed, at(7*time.Hour)), LastAppliedCommit: &commit}, false, "is failed: fix or redeploy it first"},
		{"something queued", store.DriftCandidate{LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(7*time.Hour)), LastAppliedCommit: &commit, Active: true}, false, "queued, running or awaiting approval"},
		{"never applied", store.DriftCandidate{LastDeployment: dep(store.ActionPlan, store.StatusSucceeded, at(7*time.Hour))}, false, "never applied"},
		{"no deployment at all", store.DriftCandidate{}, false, "never applied"},
		{"destroyed", store.DriftCandidate{LastDeployment: dep(store.ActionDestroy, store.StatusSucceeded, at(7*time.Hour)), LastAppliedCommit: &commit}, false, "was a destroy"},
		{"plan after apply keeps it checkable", store.DriftCandidate{LastDeployment: dep(store.ActionPlan, store.StatusSucceeded, at(7*time.Hour)), LastAppliedCommit: &commit}, true, "due since"},
		{"opted out", store.DriftCandidate{Config: store.Config{DriftSchedule: sched("off")}, LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(7*time.Hour)), LastAppliedCommit: &commit}, false, "drift checks are off"},
		{"own hourly schedule", store.DriftCandidate{Config: store.Config{DriftSchedule: sched("@every 1h")}, LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(20*time.Hour)), LastAppliedCommit: &commit, LastCheck: at(90 * time.Minute)}, true, "due since"},
		{"invalid own schedule", store.DriftCandidate{Config: store.Config{DriftSchedule: sched("nope")}, LastDeployment: dep(store.ActionApply, store.StatusSucceeded, at(7*time.Hour)), LastAppliedCommit: &commit}, false, "drift schedule is invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Config.ID = cfgID
			d := Decide(tc.c, def, now)
			require.Equal(t, tc.check, d.Check, d.Reason)
			require.Contains(t, d.Reason, tc.reason)
			if d.Check {
				require.Equal(t, commit, d.Commit)
			}
		})
	}
}
