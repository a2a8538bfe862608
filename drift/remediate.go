package drift

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/grapehq/grape/store"
)

// ErrNotRemediable: the report may not be remediated, now or ever. Errors
// that match it are *NotRemediableError, which says why.
var ErrNotRemediable = errors.New("not remediable")

// NotRemediableError says why a drift report may not be remediated.
type NotRemediableError struct {
	ReportID uuid.UUID
	// Reason is a sentence a person can act on.
	Reason string
}

func (e *NotRemediableError) Error() string {
	return fmt.Sprintf("drift report %s cannot be remediated: %s", e.ReportID, e.Reason)
}

// Is makes errors.Is(err, ErrNotRemediable) match.
func (e *NotRemediableError) Is(target error) bool { return target == ErrNotRemediable }

// DecideRemediation is the rule every way of remediating applies (the CLI,
// the portal, auto-remediation), a pure function: re-applying a report's
// commit is allowed when the report found drift and names the commit it
// checked, no newer check of the config supersedes it, and the config was
// not deployed after the check — the report's commit may be older than what
// is applied, and re-applying it would roll that deployment back. It returns
// nil or a *NotRemediableError.
func DecideRemediation(rep store.DriftReport, f store.RemediationFacts) error {
	no := func(format string, args ...any) error {
		return &NotRemediableError{ReportID: rep.ID, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case rep.Status != store.DriftDrifted:
		return no("it is %s: only a report that found drift can be remediated", rep.Status)
	case rep.CommitSHA == nil || *rep.CommitSHA == "":
		return no("it names no commit to re-apply")
	case f.NewerReport != nil:
		return no("a newer drift check of this config exists (report %s): remediate from its report", *f.NewerReport)
	case f.DeployedAfter != nil:
		return no("the config was deployed after this drift check (deployment %s): run a new drift check first", *f.DeployedAfter)
	}
	return nil
}

// Remediate queues an apply of the report's commit — the last applied one —
// through the approval gate when the config requires approval, if
// DecideRemediation allows it.
func Remediate(ctx context.Context, st *store.Store, rep store.DriftReport, who string) (store.Deployment, error) {
	facts, err := st.RemediationFacts(ctx, rep)
	if err != nil {
		return store.Deployment{}, err
	}
	if err := DecideRemediation(rep, facts); err != nil {
		return store.Deployment{}, err
	}
	return st.Enqueue(ctx, store.EnqueueParams{
		ClusterID: rep.ClusterID, ConfigID: rep.ConfigID, Action: store.ActionApply,
		SourceCommit: rep.CommitSHA, RequestedBy: fmt.Sprintf("%s (drift report %s)", who, rep.ID),
	})
}
