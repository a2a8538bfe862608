package drift_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/store"
)

func TestDecideRemediation(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	empty := ""
	newer, deployed := uuid.New(), uuid.New()
	drifted := store.DriftReport{ID: uuid.New(), Status: store.DriftDrifted, CommitSHA: &sha}
	with := func(mod func(*store.DriftReport)) store.DriftReport {
		r := drifted
		mod(&r)
		return r
	}
	cases := []struct {
		name  string
		rep   store.DriftReport
		facts store.RemediationFacts
		want  string // "" allowed; else part of the reason
	}{
		{"drifted, nothing since", drifted, store.RemediationFacts{}, ""},
		{"in sync", with(func(r *store.DriftReport) { r.Status = store.DriftInSync }), store.RemediationFacts{}, "it is in_sync"},
		{"check failed", with(func(r *store.DriftReport) { r.Status = store.DriftError }), store.RemediationFacts{}, "it is error"},
		{"no commit", with(func(r *store.DriftReport) { r.CommitSHA = nil }), store.RemediationFacts{}, "names no commit"},
		{"empty commit", with(func(r *store.DriftReport) { r.CommitSHA = &empty }), store.RemediationFacts{}, "names no commit"},
		{"a newer report", drifted, store.RemediationFacts{NewerReport: &newer}, "a newer drift check of this config exists (report " + newer.String() + ")"},
		{"deployed since the check", drifted, store.RemediationFacts{DeployedAfter: &deployed}, "deployed after this drift check (deployment " + deployed.String() + ")"},
		{"both: the newer report is named first", drifted, store.RemediationFacts{NewerReport: &newer, DeployedAfter: &deployed}, "a newer drift check"},
		{"not drifted wins over the facts", with(func(r *store.DriftReport) { r.Status = store.DriftInSync }), store.RemediationFacts{NewerReport: &newer}, "it is in_sync"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := drift.DecideRemediation(tc.rep, tc.facts)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, drift.ErrNotRemediable)
			var nre *drift.NotRemediableError
			require.ErrorAs(t, err, &nre)
			require.Equal(t, tc.rep.ID, nre.ReportID)
			require.Contains(t, nre.Reason, tc.want)
			require.Contains(t, err.Error(), tc.rep.ID.String())
		})
	}
}
