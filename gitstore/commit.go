package gitstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage"

	"github.com/grapehq/grape/redact"
)

// Change is one deployment's rendering and how to describe it.
type Change struct {
	ClusterID  string
	ConfigName string
	// Files is the full rendered tree for clusters/<cluster>/<config>/,
	// keyed by relative slash path. It replaces what was there: a file
	// missing here is deleted in the commit, and no files at all removes
	// the directory.
	Files map[string][]byte
	// Subject is the first line, e.g. "apply prod (cluster eu-1): vpc, eks, rds".
	Subject string
	// Body, if set, writes the message body from the files previously at
	// that path in the parent commit (nil if none). It runs again if the
	// commit is rebuilt on a newer remote tip. It must not call Commit.
	Body func(previous map[string][]byte) string
	// Trailers end the message (Grape-Deployment, Grape-Config,
	// Grape-Cluster, Grape-Action).
	Trailers []Trailer
	// Require, if set, is a commit (40 hex digits) the branch must still
	// contain: the last one the cluster's agents recorded as pushed. If the
	// branch lost it (a force-push rewrote the audit history), Commit fails
	// with a *HistoryError instead of building on the rewritten branch.
	Require string
}

// Result is a commit that made it into the workspace (and, in remote mode,
// onto the remote).
type Result struct {
	SHA string
	// Empty means the rendering was identical to the parent's, so the
	// commit has the same tree as its parent: the deployment is recorded
	// without a file change.
	Empty bool
	// Pushed is true in remote mode.
	Pushed bool
	// Attempts counts how often the commit was built and published: 1,
	// plus one per rebuild on a remote tip that moved meanwhile.
	Attempts int
}

// Commit writes c as a new commit on the branch, pushes it in remote mode,
// and returns its SHA. Any error means no commit was recorded for the
// deployment; a *ConflictError means the remote changed the same path.
func (s *Store) Commit(ctx context.Context, c Change) (Result, error) {
	start := time.Now()
	if err := validSegment("cluster id", c.ClusterID); err != nil {
		return Result{}, err
	}
	if err := validSegment("config name", c.ConfigName); err != nil {
		return Result{}, err
	}
	path := configPath(c.ClusterID, c.ConfigName)
	pathStr := strings.Join(path, "/")
	if err := checkFiles(c.Files); err != nil {
		return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
	}
	if _, err := message(c.Subject, "", c.Trailers); err != nil {
		return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
	}
	if c.Require != "" && !isFullSHA(c.Require) {
		return Result{}, fmt.Errorf("committing %s: required commit %q is not a full 40-digit SHA", pathStr, c.Require)
	}
	if err := s.lockWrites(ctx); err != nil {
		return Result{}, err
	}
	defer s.unlockWrites()

	// The subtree does not depend on the parent: write it once.
	var sub, base plumbing.Hash
	err := s.withObjects(ctx, func() (err error) {
		if sub, err = s.writeFiles(c.Files); err != nil {
			return err
		}
		base, err = s.refHash(s.baseRef())
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
	}

	deadline := time.Now().Add(s.opts.NetworkRetry)
	var (
		lastTip      plumbing.Hash
		lastRejected error
		// Commits of this call whose push failed without a clear answer:
		// if one of them is the remote tip now, it landed after all.
		unanswered = map[plumbing.Hash]bool{}
	)
	for attempt := 1; attempt <= s.opts.PushRetries+1; attempt++ {
		tgt, err := s.openTarget(ctx, deadline)
		if err != nil {
			return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
		}
		tip := tgt.tip()
		if unanswered[tip] {
			tgt.close()
			return s.finish(ctx, c, tip, attempt-1, start)
		}
		if lastRejected != nil && tip == lastTip {
			tgt.close()
			return Result{}, fmt.Errorf("committing %s: %w", pathStr, lastRejected)
		}
		if err := s.checkHistory(ctx, c, tip); err != nil {
			tgt.close()
			return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
		}
		parent := base
		if !tip.IsZero() && tip != base {
			if !base.IsZero() {
				if base, err = s.ownUnanswered(ctx, base, tip); err != nil {
					tgt.close()
					return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
				}
				changed, err := s.pathChanged(ctx, base, tip, path)
				if err == nil && changed {
					// Other agents of the cluster commit here too (a fleet
					// shares the workspace): only a change by anyone else is
					// a conflict.
					changed, err = s.changedOutsideCluster(ctx, base, tip, path, c.ClusterID)
				}
				if err != nil {
					tgt.close()
					return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
				}
				if changed {
					tgt.close()
					return Result{}, s.conflict(ctx, pathStr, base, tip)
				}
				s.log.Info("workspace moved; building on its new tip", "path", pathStr,
					"from", base.String(), "to", tip.String(), "attempt", attempt)
			}
			parent = tip
			base = tip
		}
		commit, err := s.buildCommit(ctx, parent, sub, path, c)
		if err != nil {
			tgt.close()
			return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
		}
		if s.beforePublish != nil {
			s.beforePublish(attempt)
		}
		err = tgt.publish(ctx, tip, commit)
		tgt.close()
		if err == nil {
			return s.finish(ctx, c, commit, attempt, start)
		}
		var rejected *rejectedError
		switch {
		case errors.Is(err, errStale):
			// The branch moved between reading and updating it.
		case errors.As(err, &rejected) && s.remote != nil:
			// Either someone pushed in between (the next round sees a
			// new tip) or the remote refuses this update for good.
			lastRejected = s.remote.errorf("pushing to", fmt.Errorf("%w: %w", ErrPushRejected, rejected))
		case s.remote != nil && ctx.Err() == nil && transient(err) && time.Now().Before(deadline):
			unanswered[commit] = true
			s.unanswered = commit
			s.log.Warn("push failed; checking the remote and retrying", "url", s.remote.url.display,
				"error", redact.Text(err.Error()))
		default:
			if s.remote == nil {
				return Result{}, fmt.Errorf("committing %s: %w", pathStr, err)
			}
			// The remote may have taken the commit before the failure.
			s.unanswered = commit
			return Result{}, fmt.Errorf("committing %s: %w", pathStr, s.remote.errorf("pushing to", err))
		}
		lastTip = tip
	}
	return Result{}, fmt.Errorf("committing %s: %w: gave up after %d attempts", pathStr, ErrRemoteBusy, s.opts.PushRetries+1)
}

// maxOwnWalk bounds the search for an unanswered commit below a remote tip.
const maxOwnWalk = 100

// maxClusterWalk bounds the commits looked at to tell a fleet's own commits
// from other changes: an agent rarely falls further behind its peers.
const maxClusterWalk = 10000

// ownUnanswered returns the base to compare a new remote tip against. If an
// earlier push of this store failed without a clear answer but its commit is
// on the remote (at or below tip), that commit is the real base: its change
// to the config's path is the store's own, not a conflict.
func (s *Store) ownUnanswered(ctx context.Context, base, tip plumbing.Hash) (plumbing.Hash, error) {
	if s.unanswered.IsZero() {
		return base, nil
	}
	found := false
	err := s.withObjects(ctx, func() error {
		h := tip
		for i := 0; i < maxOwnWalk && !h.IsZero() && h != base; i++ {
			if h == s.unanswered {
				found = true
				return nil
			}
			c, err := s.commitObject(h)
			if err != nil {
				return err
			}
			if len(c.ParentHashes) == 0 {
				return nil
			}
			h = c.ParentHashes[0]
		}
		return nil
	})
	if err != nil || !found {
		return base, err
	}
	s.log.Info("an earlier unanswered push had landed", "sha", s.unanswered.String())
	return s.unanswered, nil
}

// baseRef records the branch tip the store last agreed with, against which
// changes by others are detected. In remote mode that is the clone's own
// branch; in local mode the branch is the workspace itself, so a private ref
// remembers what the store last saw.
func (s *Store) baseRef() plumbing.ReferenceName {
	if s.remote != nil {
		return s.branch
	}
	return plumbing.ReferenceName("refs/grape/base/" + s.opts.Branch)
}

// pathChanged says whether the directory at path differs between commits
// a and b.
// changedOutsideCluster reports whether a commit between base (exclusive)
// and tip changed path without being a Grape commit of the same cluster —
// one carrying its "Grape-Cluster: <id>" trailer, as every agent of the
// cluster writes. Such a change (a person's edit of a rendering) must not be
// overwritten. The trailer is a guard against accidents, not an access
// control: anyone who may push may write it. A history too long or too
// tangled to walk counts as changed.
func (s *Store) changedOutsideCluster(ctx context.Context, base, tip plumbing.Hash, path []string, clusterID string) (bool, error) {
	trailer := TrailerCluster + ": " + clusterID
	changed := false
	err := s.withObjects(ctx, func() error {
		seen := map[plumbing.Hash]bool{base: true}
		queue := []plumbing.Hash{tip}
		for walked := 0; len(queue) > 0; walked++ {
			if walked == maxClusterWalk {
				changed = true
				return nil
			}
			h := queue[0]
			queue = queue[1:]
			if seen[h] {
				continue
			}
			seen[h] = true
			c, err := s.commitObject(h)
			if err != nil {
				return err
			}
			sub, err := s.subtreeAt(c.TreeHash, path)
			if err != nil {
				return err
			}
			touched := len(c.ParentHashes) == 0 && !sub.IsZero()
			for _, p := range c.ParentHashes {
				pc, err := s.commitObject(p)
				if err != nil {
					return err
				}
				psub, err := s.subtreeAt(pc.TreeHash, path)
				if err != nil {
					return err
				}
				touched = touched || psub != sub
				queue = append(queue, p)
			}
			if touched && !hasTrailerLine(c.Message, trailer) {
				changed = true
				return nil
			}
		}
		return nil
	})
	return changed, err
}

func hasTrailerLine(msg, line string) bool {
	for _, l := range strings.Split(msg, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

func (s *Store) pathChanged(ctx context.Context, a, b plumbing.Hash, path []string) (bool, error) {
	var changed bool
	err := s.withObjects(ctx, func() error {
		var subs [2]plumbing.Hash
		for i, h := range []plumbing.Hash{a, b} {
			c, err := s.commitObject(h)
			if err != nil {
				return err
			}
			if subs[i], err = s.subtreeAt(c.TreeHash, path); err != nil {
				return err
			}
		}
		changed = subs[0] != subs[1]
		return nil
	})
	return changed, err
}

// conflict adopts tip as the new base — so a deliberate re-run goes through
// as an ordinary commit on top of the other change — and returns the error.
func (s *Store) conflict(ctx context.Context, path string, base, tip plumbing.Hash) error {
	where := s.opts.Dir
	if s.remote != nil {
		where = s.remote.url.display
	}
	err := s.withObjects(ctx, func() error {
		return s.st.SetReference(plumbing.NewHashReference(s.baseRef(), tip))
	})
	if err != nil {
		return fmt.Errorf("recording remote tip after a conflict on %s: %w", path, err)
	}
	s.log.Warn("git conflict: path changed outside the agent", "path", path, "url", where,
		"base", base.String(), "tip", tip.String())
	return &ConflictError{Path: path, Remote: where, Base: base.String(), Tip: tip.String()}
}

// buildCommit writes the commit for c on parent: the parent's tree with the
// config's directory replaced by sub.
func (s *Store) buildCommit(ctx context.Context, parent, sub plumbing.Hash, path []string, c Change) (plumbing.Hash, error) {
	var parentTree plumbing.Hash
	var previous map[string][]byte
	err := s.withObjects(ctx, func() error {
		if !parent.IsZero() {
			pc, err := s.commitObject(parent)
			if err != nil {
				return err
			}
			parentTree = pc.TreeHash
		}
		prevSub, err := s.subtreeAt(parentTree, path)
		if err != nil || prevSub.IsZero() || c.Body == nil {
			return err
		}
		files, err := s.readTree(prevSub, false)
		if err != nil {
			return err
		}
		previous = make(map[string][]byte, len(files))
		for p, f := range files {
			previous[p] = f.content
		}
		return nil
	})
	if err != nil {
		return plumbing.ZeroHash, err
	}
	// Body is the caller's code: run it without holding the store's locks.
	body := ""
	if c.Body != nil {
		body = c.Body(previous)
	}
	msg, err := message(c.Subject, body, c.Trailers)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	var commit plumbing.Hash
	err = s.withObjects(ctx, func() error {
		root, err := s.replaceAt(parentTree, path, sub)
		if err != nil {
			return err
		}
		if root, err = s.ensureRootFile(root, ".gitignore", []byte(workspaceGitignore)); err != nil {
			return err
		}
		now := time.Now().UTC().Truncate(time.Second)
		author := object.Signature{Name: s.opts.Author.Name, Email: s.opts.Author.Email, When: now}
		co := &object.Commit{Author: author, Committer: author, Message: msg, TreeHash: root}
		if !parent.IsZero() {
			co.ParentHashes = []plumbing.Hash{parent}
		}
		if s.signer != nil {
			if err := sign(co, s.signer); err != nil {
				return err
			}
		}
		o := &plumbing.MemoryObject{}
		if err := co.Encode(o); err != nil {
			return fmt.Errorf("encoding commit: %w", err)
		}
		commit, err = s.writeObject(o)
		return err
	})
	return commit, err
}

// finish records a published commit as the store's new base.
func (s *Store) finish(ctx context.Context, c Change, commit plumbing.Hash, attempts int, start time.Time) (Result, error) {
	s.unanswered = plumbing.ZeroHash
	var empty bool
	err := s.withObjects(ctx, func() error {
		co, err := s.commitObject(commit)
		if err != nil {
			return err
		}
		if len(co.ParentHashes) == 1 {
			parent, err := s.commitObject(co.ParentHashes[0])
			if err != nil {
				return err
			}
			empty = parent.TreeHash == co.TreeHash
		}
		if s.remote == nil {
			return s.st.SetReference(plumbing.NewHashReference(s.baseRef(), commit))
		}
		for _, name := range []plumbing.ReferenceName{s.branch, s.tracking} {
			if err := s.st.SetReference(plumbing.NewHashReference(name, commit)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// The commit is published; only the local bookkeeping failed.
		return Result{}, fmt.Errorf("recording commit %s in %s: %w", commit, s.opts.Dir, err)
	}
	s.log.Debug("git commit recorded", "sha", commit.String(), "cluster", c.ClusterID, "config", c.ConfigName,
		"empty", empty, "attempts", attempts, "took", time.Since(start))
	s.upkeep(ctx)
	return Result{SHA: commit.String(), Empty: empty, Pushed: s.remote != nil, Attempts: attempts}, nil
}

// upkeep packs the loose objects once enough were written since the last
// look (counting is free; listing loose objects is a directory scan). The
// commit is already published: a failure here is only logged, and the next
// commit tries again. Merging packs is Maintain's, outside commits.
func (s *Store) upkeep(ctx context.Context) {
	if s.written < looseLimit {
		return
	}
	err := s.withObjects(ctx, func() error {
		res, err := s.packLoose(ctx, looseLimit)
		if err == nil {
			s.written = res.LooseAfter
		}
		return err
	})
	if err != nil {
		s.log.Warn("packing the git workspace failed; retried after the next commit", "dir", s.opts.Dir, "error", err)
	}
}

// errStale means the branch moved between reading its tip and updating it.
var errStale = errors.New("branch moved meanwhile")

// target is where a commit is published: the local branch, or the remote.
type target interface {
	tip() plumbing.Hash
	publish(ctx context.Context, old, new plumbing.Hash) error
	close()
}

func (s *Store) openTarget(ctx context.Context, deadline time.Time) (target, error) {
	if s.remote == nil {
		var tip plumbing.Hash
		err := s.withObjects(ctx, func() (err error) {
			tip, err = s.refHash(s.branch)
			return err
		})
		return &localTarget{s: s, head: tip}, err
	}
	return s.openRemoteTarget(ctx, deadline)
}

type localTarget struct {
	s    *Store
	head plumbing.Hash
}

func (t *localTarget) tip() plumbing.Hash { return t.head }
func (t *localTarget) close()             {}

// publish moves the branch by compare-and-swap, so a concurrent writer
// outside this process (git push into a local workspace) is never lost.
func (t *localTarget) publish(ctx context.Context, old, new plumbing.Hash) error {
	return t.s.withObjects(ctx, func() error {
		ref := plumbing.NewHashReference(t.s.branch, new)
		if old.IsZero() {
			cur, err := t.s.refHash(t.s.branch)
			if err != nil {
				return err
			}
			if !cur.IsZero() {
				return errStale
			}
			return t.s.st.SetReference(ref)
		}
		err := t.s.st.CheckAndSetReference(ref, plumbing.NewHashReference(t.s.branch, old))
		if errors.Is(err, storage.ErrReferenceHasChanged) {
			return errStale
		}
		if err != nil {
			return fmt.Errorf("updating %s in %s: %w", t.s.branch, t.s.opts.Dir, err)
		}
		return nil
	})
}

type remoteTarget struct {
	s *Store
	p *pushSession
}

func (t *remoteTarget) tip() plumbing.Hash { return t.p.tip }
func (t *remoteTarget) close()             { t.p.close() }

func (t *remoteTarget) publish(ctx context.Context, old, new plumbing.Hash) error {
	ctx, cancel := context.WithTimeout(ctx, t.s.opts.Timeout)
	defer cancel()
	return t.s.push(ctx, t.p, old, new)
}

// openRemoteTarget lists the remote's refs and, if its branch moved to a
// commit this clone lacks, fetches it.
func (s *Store) openRemoteTarget(ctx context.Context, deadline time.Time) (target, error) {
	var p *pushSession
	err := s.retry(ctx, deadline, min(s.opts.Timeout, connectTimeout), "listing refs", func(ctx context.Context) (err error) {
		p, err = s.remote.openPush(ctx, s.branch)
		return err
	})
	if err != nil {
		return nil, s.remote.errorf("connecting to", err)
	}
	if p.tip.IsZero() {
		return &remoteTarget{s: s, p: p}, nil
	}
	var have bool
	if err := s.withObjects(ctx, func() error { have = s.hasObject(p.tip); return nil }); err != nil {
		p.close()
		return nil, err
	}
	if have {
		return &remoteTarget{s: s, p: p}, nil
	}
	err = s.retry(ctx, deadline, s.opts.Timeout, "fetching", func(ctx context.Context) error {
		return s.withObjects(ctx, func() error { return s.remote.fetch(ctx, s) })
	})
	if err == nil {
		err = s.withObjects(ctx, func() error {
			if !s.hasObject(p.tip) {
				return fmt.Errorf("remote branch %s moved to %s, which the fetch did not bring", s.branch, p.tip)
			}
			return nil
		})
	}
	if err != nil {
		p.close()
		return nil, s.remote.errorf("fetching from", err)
	}
	return &remoteTarget{s: s, p: p}, nil
}

// initialFetch fills a new clone. It first lists the remote's refs through
// receive-pack, which fails fast on an unreachable host (go-git dials some
// transports without a deadline) and proves the credentials may push. An
// empty remote, or one without the branch, is fine: the first commit
// creates the branch.
func (s *Store) initialFetch(ctx context.Context) error {
	deadline := time.Now().Add(s.opts.NetworkRetry)
	var p *pushSession
	err := s.retry(ctx, deadline, min(s.opts.Timeout, connectTimeout), "listing refs", func(ctx context.Context) (err error) {
		p, err = s.remote.openPush(ctx, s.branch)
		return err
	})
	if err != nil {
		return s.remote.errorf("cloning", err)
	}
	p.close()
	if p.tip.IsZero() {
		s.log.Info("remote workspace has no branch yet; the first commit creates it",
			"url", s.remote.url.display, "branch", s.opts.Branch)
		return nil
	}
	err = s.retry(ctx, deadline, s.opts.Timeout, "cloning", func(ctx context.Context) error {
		return s.withObjects(ctx, func() error { return s.remote.fetch(ctx, s) })
	})
	if err != nil {
		return s.remote.errorf("cloning", err)
	}
	return s.withObjects(ctx, func() error {
		tip, err := s.refHash(s.tracking)
		if err != nil || tip.IsZero() {
			return err
		}
		return s.st.SetReference(plumbing.NewHashReference(s.branch, tip))
	})
}
