package drift

import (
	"fmt"
	"time"

	"github.com/grapehq/grape/store"
)

// Decision says whether a config gets a drift check now, and why not.
type Decision struct {
	Check  bool
	Commit string // the last applied commit, to check
	Reason string // why not (for the log), or why
}

// Decide is the idleness rule, a pure function: a config gets a drift check
// when checks are on for it, its last deployment is a succeeded apply (so
// the last applied commit is what should be running), nothing of it is
// queued, running or awaiting approval, and its schedule (with its jitter)
// says a check is due since the last one — or since that apply, if it was
// never checked.
func Decide(c store.DriftCandidate, agentDefault Schedule, now time.Time) Decision {
	sched := agentDefault
	if c.Config.DriftSchedule != nil && *c.Config.DriftSchedule != "" {
		own, err := ParseSchedule(*c.Config.DriftSchedule)
		if err != nil {
			return Decision{Reason: fmt.Sprintf("config's drift schedule is invalid: %v", err)}
		}
		sched = own
	}
	last := c.LastDeployment
	switch {
	case sched.Off():
		return Decision{Reason: "drift checks are off for this config"}
	case c.Active:
		return Decision{Reason: "a deployment of this config is queued, running or awaiting approval"}
	case last == nil || c.LastAppliedCommit == nil:
		return Decision{Reason: "never applied: nothing to compare against"}
	case last.Action != store.ActionApply && last.Action != store.ActionPlan:
		return Decision{Reason: fmt.Sprintf("last deployment %s was a %s", last.ID, last.Action)}
	case last.Status != store.StatusSucceeded:
		return Decision{Reason: fmt.Sprintf("last deployment %s is %s: fix or redeploy it first", last.ID, last.Status)}
	}
	ref := c.Config.UpdatedAt
	if last.FinishedAt != nil {
		ref = *last.FinishedAt
	}
	if c.LastCheck != nil && c.LastCheck.After(ref) {
		ref = *c.LastCheck
	}
	due := sched.Next(ref).Add(Jitter(c.Config.ID.String(), sched.Period(ref)))
	if now.Before(due) {
		return Decision{Reason: fmt.Sprintf("next check due at %s", due.UTC().Format(time.RFC3339))}
	}
	return Decision{Check: true, Commit: *c.LastAppliedCommit, Reason: fmt.Sprintf("due since %s", due.UTC().Format(time.RFC3339))}
}
