package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/runner"
	"github.com/grapehq/grape/store"
)

// A run that ends while terraform holds the state lock can leave the lock
// behind: its agent was killed, terraform was killed after a timeout, or the
// state backend went away before terraform could release it (terraform 1.11
// does not even report a failed release when reading the state failed
// first). The config's next run then finds the lock. This file tells such a
// lock apart from one a live run holds, by which earlier deployment of the
// config was running when the lock was created, and acts on it.

// lockSkew is how far apart terraform's clock (the lock's Created time, taken
// on the agent's machine) and the database's (a deployment's started_at and
// finished_at) may be for a lock to count as created during a deployment.
const lockSkew = 30 * time.Second

// planLockOperation is the Operation of the lock terraform takes for a plan.
const planLockOperation = "OperationTypePlan"

// staleLock is a lock left by an earlier deployment of the config, or by an
// earlier attempt of this one.
type staleLock struct {
	lock *runner.LockInfo
	by   store.Deployment
	// earlierAttempt: by is the deployment itself; an attempt before this
	// one lost its agent (the rescuer requeued it, so before apply).
	earlierAttempt bool
}

// findStaleLock returns the lock terraform ran into if an earlier deployment
// of the config left it, or nil.
func findStaleLock(ctx context.Context, r *reconciler.Run, err error) *staleLock {
	var re *runner.Error
	if !errors.As(err, &re) || re.Kind != store.KindStateLock || re.Lock == nil {
		return nil
	}
	created, perr := parseLockCreated(re.Lock.Created)
	if perr != nil {
		return nil
	}
	if self := r.Deployment; self.Attempt > 1 && re.Lock.Operation == planLockOperation && self.StartedAt != nil &&
		self.ClaimedAt != nil && !created.Before(self.StartedAt.Add(-lockSkew)) && created.Before(*self.ClaimedAt) {
		// A plan lock taken after this deployment first started and before
		// this attempt claimed it: by an attempt whose agent was lost (a
		// requeued attempt never reached apply).
		return &staleLock{lock: re.Lock, by: self, earlierAttempt: true}
	}
	cfgID := r.Deployment.ConfigID
	prev, lerr := r.Store().ListDeployments(ctx, store.ListFilter{ConfigID: &cfgID, Statuses: []store.Status{store.StatusFailed, store.StatusCancelled}, Limit: 20})
	if lerr != nil {
		r.Log.Warn("looking for the deployment that left the state lock failed", "err", lerr)
		return nil
	}
	p, ok := leftBy(created, r.Deployment.ID, prev)
	if !ok {
		return nil
	}
	return &staleLock{lock: re.Lock, by: p}
}

// releasable reports whether the agent may release the lock itself: a plan
// lock. The run that took it has ended — its deployment (or attempt) ended,
// and with it its terraform: killed with a lost agent, stopped by the agent
// when it could not renew its lease, or exited after failing. A plan lock
// guards no write, so releasing it cannot let two runs write the state at
// once. A lock left during apply is never released automatically: the
// apply may have half-changed the infrastructure, and a person must look
// first.
func (s *staleLock) releasable() bool {
	return s.lock.Operation == planLockOperation
}

// describe is the outcome's message for a stale lock left in place.
func (s *staleLock) describe() string {
	return fmt.Sprintf("the state is locked by %s (%s since %s, lock ID %s), left by %s: check the state, then release the lock with terraform force-unlock %s",
		s.lock.Who, s.lock.Operation, s.lock.Created, s.lock.ID, s.origin(), s.lock.ID)
}

// origin says which run left the lock, and how.
func (s *staleLock) origin() string {
	switch {
	case s.earlierAttempt:
		return "an earlier attempt of this deployment, whose agent was lost"
	case ptr.Deref(s.by.ErrorKind) == store.KindAgentLost:
		return fmt.Sprintf("deployment %s, whose agent %s was lost during %s", s.by.ID, ptr.Deref(s.by.ClaimedBy), s.by.PhaseName())
	case strings.Contains(ptr.Deref(s.by.Error), runner.LockNotReleased):
		return fmt.Sprintf("deployment %s, whose terraform %s", s.by.ID, runner.LockNotReleased)
	}
	return fmt.Sprintf("deployment %s, which ended %s (%s) during %s without releasing it", s.by.ID, s.by.Status, ptr.Deref(s.by.ErrorKind), s.by.PhaseName())
}

// releaseStaleLock releases a plan lock an earlier deployment left when its
// backend went away (see releasable), so the plan can be retried. It reports
// whether it did.
func (d *Deployer) releaseStaleLock(ctx context.Context, r *reconciler.Run, j runner.Job, err error) bool {
	s := findStaleLock(ctx, r, err)
	if s == nil || !s.releasable() {
		return false
	}
	r.Logs.Agentf("the state lock %s (%s by %s since %s) was left by %s; that plan has ended and a plan lock guards no write: releasing it", s.lock.ID, s.lock.Operation, s.lock.Who, s.lock.Created, s.origin())
	if uerr := d.Runner.ForceUnlock(ctx, j, s.lock.ID); uerr != nil {
		r.Logs.Agentf("releasing the state lock %s failed: %v", s.lock.ID, uerr)
		return false
	}
	return true
}

// terraformFailedIn is terraformFailed for run r: when terraform ran into a
// state lock an earlier deployment of the config left behind, the outcome
// says which deployment left it and why, instead of telling the reader to
// wait for a run that will never finish; when terraform could not release
// its own lock, the log says what happens to it.
func (d *Deployer) terraformFailedIn(ctx context.Context, r *reconciler.Run, err error) store.Outcome {
	o := terraformFailed(err)
	var re *runner.Error
	if errors.As(err, &re) && re.LockLeft {
		if re.Phase == "plan" {
			r.Logs.Agentf("the state lock may still be held: the next deployment of this config releases it (a plan lock guards no write)")
		} else {
			r.Logs.Agentf("the state lock may still be held: check the state, then release it with terraform force-unlock (the next deployment's error names the lock)")
		}
	}
	if o.Kind != store.KindStateLock {
		return o
	}
	if s := findStaleLock(ctx, r, err); s != nil {
		o.Error = s.describe()
		r.Logs.Agentf("%s", o.Error)
	}
	return o
}

// leftBy picks, among a config's failed or cancelled deployments, the one
// that left a lock created at created: one whose terraform may have held the
// state and that was running when the lock was created. A state lock is
// exclusive, so a lock created while that deployment's terraform held the
// state, and still there, is the one it took. Failures that happen before
// terraform runs, or because another run held the lock, never took it.
// self (the deployment that ran into the lock) is never the answer.
func leftBy(created time.Time, self uuid.UUID, ended []store.Deployment) (store.Deployment, bool) {
	for _, p := range ended {
		if p.ID == self || p.StartedAt == nil || p.FinishedAt == nil || !mayHoldLock[ptr.Deref(p.ErrorKind)] {
			continue
		}
		if created.Before(p.StartedAt.Add(-lockSkew)) || created.After(p.FinishedAt.Add(lockSkew)) {
			continue
		}
		return p, true
	}
	return store.Deployment{}, false
}

// mayHoldLock lists the ways a run can end while its terraform holds (or
// held, and may not have released) the state lock.
var mayHoldLock = map[store.ErrorKind]bool{
	store.KindAgentLost: true, store.KindInit: true, store.KindPlan: true, store.KindApply: true,
	store.KindTimeout: true, store.KindCancelled: true, store.KindInternal: true,
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
