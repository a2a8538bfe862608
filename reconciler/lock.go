package reconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// lockSkew is how far apart terraform's clock (the lock's Created time, taken
// on the agent's machine) and the database's (a deployment's started_at and
// finished_at) may be for a lock to count as created during a deployment.
const lockSkew = 30 * time.Second

// terraformFailedIn is terraformFailed for run r: when terraform
// ran into a state lock that an earlier deployment of the config left behind
// (its agent died during apply, so its terraform never unlocked), the outcome
// says so — which deployment, which agent — instead of telling the reader to
// wait for a run that will never finish.
func (d *Deployer) terraformFailedIn(ctx context.Context, r *Run, err error) store.Outcome {
	o := terraformFailed(err)
	var re *runner.Error
	if o.Kind != store.KindStateLock || !errors.As(err, &re) || re.Lock == nil {
		return o
	}
	if left, ok := lockLeftBy(ctx, r, re.Lock); ok {
		o.Error = left
		r.Logs.Agentf("%s", left)
	}
	return o
}

// lockLeftBy describes the lock with the config's earlier deployment that
// left it, if there is one (see leftBy).
func lockLeftBy(ctx context.Context, r *Run, li *runner.LockInfo) (string, bool) {
	created, err := parseLockCreated(li.Created)
	if err != nil {
		return "", false
	}
	cfgID := r.Deployment.ConfigID
	prev, err := r.Store().ListDeployments(ctx, store.ListFilter{ConfigID: &cfgID, Statuses: []store.Status{store.StatusFailed}, Limit: 20})
	if err != nil {
		r.Log.Warn("looking for the deployment that left the state lock failed", "err", err)
		return "", false
	}
	p, ok := leftBy(created, r.Deployment.ID, prev)
	if !ok {
		return "", false
	}
	return fmt.Sprintf("the state is locked by %s (%s since %s, lock ID %s), left by deployment %s, whose agent %s was lost during %s: check the state, then release the lock with terraform force-unlock %s",
		li.Who, li.Operation, li.Created, li.ID, p.ID, deref(p.ClaimedBy), p.PhaseName(), li.ID), true
}

// leftBy picks, among a config's failed deployments, the one whose agent was
// lost while it ran and during which a lock created at created was taken. A
// state lock is exclusive: a lock created while that deployment's terraform
// held the state, and still there, is the one its dead terraform took. self
// (the deployment that ran into the lock) is never the answer.
func leftBy(created time.Time, self uuid.UUID, failed []store.Deployment) (store.Deployment, bool) {
	for _, p := range failed {
		if p.ID == self || p.StartedAt == nil || p.FinishedAt == nil || deref(p.ErrorKind) != store.KindAgentLost {
			continue
		}
		if created.Before(p.StartedAt.Add(-lockSkew)) || created.After(p.FinishedAt.Add(lockSkew)) {
			continue
		}
		return p, true
	}
	return store.Deployment{}, false
}

// parseLockCreated reads the Created time of terraform's lock info as its
// human output prints it (Go's time.Time.String).
func parseLockCreated(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999 -0700 MST", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("lock created time %q not understood", s)
}
