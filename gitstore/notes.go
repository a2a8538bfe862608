package gitstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage"

	"github.com/grapehq/grape/redact"
)

// NotesRef is where Grape keeps what happened to each commit: `git log
// --notes=grape` shows it under the commit.
const NotesRef = plumbing.ReferenceName("refs/notes/grape")

const (
	// notesPushedRef is the notes commit the remote last confirmed holding
	// (a push or a fetch that found it there). Everything on NotesRef's
	// first-parent chain above it is pending.
	notesPushedRef = plumbing.ReferenceName("refs/grape/notes-pushed")
	// notesFetchedRef receives the remote's notes when they must be merged.
	notesFetchedRef = plumbing.ReferenceName("refs/grape/notes-fetched")
	// maxPendingWalk bounds counting pending notes.
	maxPendingWalk = 100000
)

// NotePendingError means the note was written to the clone's NotesRef but
// could not be pushed: the remote is unreachable or kept refusing. The note
// is not lost — PushPendingNotes sends it later — and nothing about the
// deployment's outcome depends on it.
type NotePendingError struct {
	// Pending counts the notes in the clone the remote does not have yet.
	Pending int
	Err     error
}

func (e *NotePendingError) Error() string {
	return fmt.Sprintf("git note kept in the workspace clone, not pushed yet (%d pending; retried later): %v", e.Pending, e.Err)
}

func (e *NotePendingError) Unwrap() error { return e.Err }

// AddNote appends text to the note on commit sha in refs/notes/grape, as
// `git notes --ref=grape append` would (a blank line between events), and
// pushes the notes ref in remote mode. A concurrent notes push by another
// agent or a person is fetched and merged, never overwritten. When the push
// fails the note stays in the clone and AddNote returns a
// *NotePendingError; any other error means no note was written.
//
// text passes through redact.Text and the same secret checks as committed
// files; callers redact their run's secrets first.
func (s *Store) AddNote(ctx context.Context, sha, text string) error {
	if err := s.lockNotes(ctx); err != nil {
		return err
	}
	defer s.unlockNotes()
	if err := s.appendNoteLocked(ctx, sha, text); err != nil {
		return err
	}
	if s.remote == nil {
		return nil
	}
	if err := s.pushNotes(ctx); err != nil {
		n, cerr := s.pendingNotesLocked(ctx)
		if cerr != nil {
			n = -1
		}
		s.log.Warn("git note not pushed; kept in the workspace clone and retried later", "sha", sha,
			"pending", n, "url", s.remote.url.display, "error", redact.Text(err.Error()))
		return &NotePendingError{Pending: n, Err: err}
	}
	return nil
}

// AppendNote is AddNote without the push: the note waits in the clone for
// the next PushPendingNotes, so several notes go in one push.
func (s *Store) AppendNote(ctx context.Context, sha, text string) error {
	if err := s.lockNotes(ctx); err != nil {
		return err
	}
	defer s.unlockNotes()
	return s.appendNoteLocked(ctx, sha, text)
}

func (s *Store) appendNoteLocked(ctx context.Context, sha, text string) error {
	if !isFullSHA(sha) {
		return fmt.Errorf("adding git note: commit %q is not a full 40-digit SHA", sha)
	}
	text = strings.TrimRight(redact.Text(text), "\n") + "\n"
	if strings.TrimSpace(text) == "" {
		return fmt.Errorf("adding git note to %s: empty note", short(sha))
	}
	if what := forbiddenContent([]byte(text)); what != "" {
		return fmt.Errorf("adding git note to %s: %s (%w)", short(sha), what, ErrForbiddenFile)
	}
	// The commit need not be in this clone: another agent of the fleet may
	// have made it, and git notes annotate any object name.
	target := plumbing.NewHash(sha)
	err := s.withObjects(ctx, func() error {
		for {
			old, err := s.refHash(NotesRef)
			if err != nil {
				return err
			}
			next, err := s.appendNote(old, target, text)
			if err != nil {
				return err
			}
			err = s.moveRef(NotesRef, old, next)
			if errors.Is(err, errStale) {
				continue // someone ran git notes in a local workspace meanwhile
			}
			return err
		}
	})
	if err != nil {
		return fmt.Errorf("adding git note to %s: %w", short(sha), err)
	}
	return nil
}

// Note returns the note on commit sha in refs/notes/grape of the clone, or
// "" if it has none.
func (s *Store) Note(ctx context.Context, sha string) (string, error) {
	var out string
	err := s.withObjects(ctx, func() error {
		head, err := s.refHash(NotesRef)
		if err != nil || head.IsZero() {
			return err
		}
		notes, err := s.readNotes(head)
		if err != nil {
			return err
		}
		blob, ok := notes[sha]
		if !ok {
			return nil
		}
		b, err := s.blobContent(blob)
		out = string(b)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("reading git note of %s: %w", short(sha), err)
	}
	return out, nil
}

// Notes returns the notes on the given commits (missing ones are left
// out), reading the notes tree once.
func (s *Store) Notes(ctx context.Context, shas []string) (map[string]string, error) {
	out := map[string]string{}
	err := s.withObjects(ctx, func() error {
		head, err := s.refHash(NotesRef)
		if err != nil || head.IsZero() {
			return err
		}
		notes, err := s.readNotes(head)
		if err != nil {
			return err
		}
		for _, sha := range shas {
			if blob, ok := notes[sha]; ok {
				b, err := s.blobContent(blob)
				if err != nil {
					return err
				}
				out[sha] = string(b)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading git notes: %w", err)
	}
	return out, nil
}

// PushPendingNotes pushes notes that earlier pushes could not deliver and
// returns how many are still pending. The agent calls it at start and on a
// ticker. Local workspaces have nothing to push.
func (s *Store) PushPendingNotes(ctx context.Context) (int, error) {
	if s.remote == nil {
		return 0, nil
	}
	if err := s.lockNotes(ctx); err != nil {
		return 0, err
	}
	defer s.unlockNotes()
	n, err := s.pendingNotesLocked(ctx)
	if err != nil || n == 0 {
		return n, err
	}
	pushErr := s.pushNotes(ctx)
	n, err = s.pendingNotesLocked(ctx)
	if pushErr != nil {
		return n, fmt.Errorf("pushing %d pending git notes: %w", n, pushErr)
	}
	if err == nil && n == 0 {
		s.log.Info("pending git notes pushed", "url", s.remote.url.display)
	}
	return n, err
}

// PendingNotes counts the notes in the clone that the remote does not have
// yet (always 0 for a local workspace).
func (s *Store) PendingNotes(ctx context.Context) (int, error) {
	if s.remote == nil {
		return 0, nil
	}
	return s.pendingNotesLocked(ctx)
}

func (s *Store) lockNotes(ctx context.Context) error {
	select {
	case s.notesSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for another git note: %w", context.Cause(ctx))
	}
}

func (s *Store) unlockNotes() { <-s.notesSem }

// pendingNotesLocked counts the note events on NotesRef's first-parent chain
// above what the remote confirmed (merge commits add no event).
func (s *Store) pendingNotesLocked(ctx context.Context) (int, error) {
	n := 0
	err := s.withObjects(ctx, func() error {
		head, err := s.refHash(NotesRef)
		if err != nil {
			return err
		}
		pushed, err := s.refHash(notesPushedRef)
		if err != nil {
			return err
		}
		for h, i := head, 0; !h.IsZero() && h != pushed && i < maxPendingWalk; i++ {
			c, err := s.commitObject(h)
			if err != nil {
				return err
			}
			if len(c.ParentHashes) < 2 {
				n++
			}
			if len(c.ParentHashes) == 0 {
				break
			}
			h = c.ParentHashes[0]
		}
		return nil
	})
	return n, err
}

// pushNotes brings the remote's refs/notes/grape up to the clone's: a fast
// forward when the remote has not moved, else a fetch and a merge first.
// It never forces: a push the remote refuses because the ref moved again is
// retried on the new remote state, up to PushRetries times.
func (s *Store) pushNotes(ctx context.Context) error {
	deadline := time.Now().Add(s.opts.NetworkRetry)
	for attempt := 0; attempt <= s.opts.PushRetries; attempt++ {
		var p *pushSession
		err := s.retry(ctx, deadline, min(s.opts.Timeout, connectTimeout), "listing refs", func(ctx context.Context) (err error) {
			p, err = s.remote.openPush(ctx, s.branch)
			return err
		})
		if err != nil {
			return s.remote.errorf("connecting to", err)
		}
		done, old, local, err := s.prepareNotesPush(ctx, deadline, p.refs[NotesRef])
		if err != nil || done {
			p.close()
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		err = s.pushRef(pctx, p, NotesRef, old, local)
		cancel()
		p.close()
		if err == nil {
			return s.withObjects(ctx, func() error {
				return s.st.SetReference(plumbing.NewHashReference(notesPushedRef, local))
			})
		}
		var rejected *rejectedError
		if !errors.As(err, &rejected) {
			return s.remote.errorf("pushing notes to", err)
		}
		s.log.Info("remote notes moved while pushing; merging again", "attempt", attempt+1)
	}
	return s.remote.errorf("pushing notes to", fmt.Errorf("%w: gave up after %d attempts", ErrRemoteBusy, s.opts.PushRetries+1))
}

// prepareNotesPush looks at the remote's notes tip and returns what to push
// (old → local), merging the remote's notes into the clone's first when the
// remote holds notes the clone lacks. done means nothing is left to push.
func (s *Store) prepareNotesPush(ctx context.Context, deadline time.Time, remoteTip plumbing.Hash) (done bool, old, local plumbing.Hash, err error) {
	var ff bool
	err = s.withObjects(ctx, func() (err error) {
		if local, err = s.refHash(NotesRef); err != nil {
			return err
		}
		ff, err = s.isAncestor(remoteTip, local)
		return err
	})
	if err != nil {
		return false, plumbing.ZeroHash, plumbing.ZeroHash, err
	}
	if !ff {
		spec := config.RefSpec(fmt.Sprintf("+%s:%s", NotesRef, notesFetchedRef))
		err = s.retry(ctx, deadline, s.opts.Timeout, "fetching notes", func(ctx context.Context) error {
			return s.withObjects(ctx, func() error { return s.remote.fetchSpecs(ctx, s, spec) })
		})
		if err != nil {
			return false, plumbing.ZeroHash, plumbing.ZeroHash, s.remote.errorf("fetching notes from", err)
		}
		err = s.withObjects(ctx, func() error {
			if !s.hasObject(remoteTip) {
				return fmt.Errorf("remote notes moved to %s, which the fetch did not bring", remoteTip)
			}
			merged, err := s.mergeNotes(local, remoteTip)
			if err != nil {
				return err
			}
			if err := s.moveRef(NotesRef, local, merged); err != nil {
				return err
			}
			local = merged
			return nil
		})
		if err != nil {
			return false, plumbing.ZeroHash, plumbing.ZeroHash, fmt.Errorf("merging the remote's git notes: %w", err)
		}
	}
	if local == remoteTip {
		err = s.withObjects(ctx, func() error {
			return s.st.SetReference(plumbing.NewHashReference(notesPushedRef, local))
		})
		return true, remoteTip, local, err
	}
	return false, remoteTip, local, nil
}

// isAncestor says whether a is b or reachable from it. A zero a is an
// ancestor of everything; an a the clone lacks is not.
func (s *Store) isAncestor(a, b plumbing.Hash) (bool, error) {
	if a.IsZero() || a == b {
		return true, nil
	}
	if b.IsZero() || !s.hasObject(a) {
		return false, nil
	}
	return s.reachable(b, a)
}

// reachable walks from b to find a, over at most maxPendingWalk commits.
func (s *Store) reachable(b, a plumbing.Hash) (bool, error) {
	seen := map[plumbing.Hash]bool{}
	queue := []plumbing.Hash{b}
	for len(queue) > 0 && len(seen) < maxPendingWalk {
		h := queue[0]
		queue = queue[1:]
		if seen[h] {
			continue
		}
		seen[h] = true
		if h == a {
			return true, nil
		}
		c, err := s.commitObject(h)
		if err != nil {
			return false, err
		}
		queue = append(queue, c.ParentHashes...)
	}
	return false, nil
}

// moveRef updates ref from old to new by compare-and-swap.
func (s *Store) moveRef(ref plumbing.ReferenceName, old, new plumbing.Hash) error {
	next := plumbing.NewHashReference(ref, new)
	if old.IsZero() {
		cur, err := s.refHash(ref)
		if err != nil {
			return err
		}
		if !cur.IsZero() {
			return errStale
		}
		return s.st.SetReference(next)
	}
	err := s.st.CheckAndSetReference(next, plumbing.NewHashReference(ref, old))
	if errors.Is(err, storage.ErrReferenceHasChanged) {
		return errStale
	}
	if err != nil {
		return fmt.Errorf("updating %s in %s: %w", ref, s.opts.Dir, err)
	}
	return nil
}

// readNotes maps annotated commit → note blob for the notes commit h. Git
// may have written the tree with fan-out directories (ab/cdef…); both
// layouts are read.
func (s *Store) readNotes(h plumbing.Hash) (map[string]plumbing.Hash, error) {
	c, err := s.commitObject(h)
	if err != nil {
		return nil, err
	}
	out := map[string]plumbing.Hash{}
	var walk func(tree plumbing.Hash, prefix string) error
	walk = func(tree plumbing.Hash, prefix string) error {
		entries, err := s.treeEntries(tree)
		if err != nil {
			return err
		}
		for _, e := range entries {
			name := prefix + e.Name
			switch {
			case e.Mode == filemode.Dir && len(name) < 40:
				if err := walk(e.Hash, name); err != nil {
					return err
				}
			case e.Mode.IsFile() && isFullSHA(name):
				out[name] = e.Hash
			}
		}
		return nil
	}
	return out, walk(c.TreeHash, "")
}

// writeNotesCommit writes a notes commit holding notes (flat layout, which
// git reads like its own fan-out) on parents.
func (s *Store) writeNotesCommit(notes map[string]plumbing.Hash, msg string, parents ...plumbing.Hash) (plumbing.Hash, error) {
	names := make([]string, 0, len(notes))
	for n := range notes {
		names = append(names, n)
	}
	sort.Strings(names)
	entries := make([]object.TreeEntry, 0, len(names))
	for _, n := range names {
		entries = append(entries, object.TreeEntry{Name: n, Mode: filemode.Regular, Hash: notes[n]})
	}
	tree, err := s.writeTree(entries)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	sig := object.Signature{Name: s.opts.Author.Name, Email: s.opts.Author.Email, When: now}
	co := &object.Commit{Author: sig, Committer: sig, Message: msg, TreeHash: tree}
	for _, p := range parents {
		if !p.IsZero() {
			co.ParentHashes = append(co.ParentHashes, p)
		}
	}
	o := &plumbing.MemoryObject{}
	if err := co.Encode(o); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encoding notes commit: %w", err)
	}
	return s.writeObject(o)
}

// appendNote returns a notes commit on parent whose note for target is the
// old note, a blank line, and text.
func (s *Store) appendNote(parent, target plumbing.Hash, text string) (plumbing.Hash, error) {
	notes := map[string]plumbing.Hash{}
	if !parent.IsZero() {
		var err error
		if notes, err = s.readNotes(parent); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	content := text
	if old, ok := notes[target.String()]; ok {
		b, err := s.blobContent(old)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		content = joinNotes(string(b), text)
	}
	blob, err := s.writeBlob([]byte(content))
	if err != nil {
		return plumbing.ZeroHash, err
	}
	notes[target.String()] = blob
	return s.writeNotesCommit(notes, fmt.Sprintf("Notes added by grape for %s\n", short(target.String())), parent)
}

// mergeNotes merges the remote's notes commit theirs into ours. Notes on
// different commits are simply both kept; two versions of the same note
// are merged by mergeNote.
func (s *Store) mergeNotes(ours, theirs plumbing.Hash) (plumbing.Hash, error) {
	if ours.IsZero() {
		return theirs, nil
	}
	a, err := s.readNotes(ours)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	b, err := s.readNotes(theirs)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	for sha, hb := range b {
		ha, ok := a[sha]
		if !ok || ha == hb {
			a[sha] = hb
			continue
		}
		ca, err := s.blobContent(ha)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		cb, err := s.blobContent(hb)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if a[sha], err = s.writeBlob([]byte(mergeNote(string(ca), string(cb)))); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	return s.writeNotesCommit(a, "Notes merged by grape with the remote's\n", ours, theirs)
}

// mergeNote merges two versions of one note. A note is a list of events
// separated by blank lines, only ever appended to; the merge keeps ours and
// adds each of their events ours lacks, in their order. Events carry a
// deployment id and times, so two equal blocks are the same event seen
// through two clones, not two events.
func mergeNote(ours, theirs string) string {
	have := map[string]int{}
	oursBlocks := noteBlocks(ours)
	for _, b := range oursBlocks {
		have[b]++
	}
	out := oursBlocks
	for _, b := range noteBlocks(theirs) {
		if have[b] > 0 {
			have[b]--
			continue
		}
		out = append(out, b)
	}
	return strings.Join(out, "\n\n") + "\n"
}

// noteBlocks splits a note into its blank-line separated events.
func noteBlocks(note string) []string {
	var out []string
	for _, b := range strings.Split(strings.ReplaceAll(note, "\r\n", "\n"), "\n\n") {
		if b = strings.Trim(b, "\n"); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// joinNotes appends b to a with one blank line between, as git notes
// append does.
func joinNotes(a, b string) string {
	a = strings.TrimRight(a, "\n")
	b = strings.TrimLeft(b, "\n")
	switch {
	case a == "":
		return b
	case b == "":
		return a + "\n"
	}
	return a + "\n\n" + b
}

func (s *Store) writeBlob(content []byte) (plumbing.Hash, error) {
	o := &plumbing.MemoryObject{}
	o.SetType(plumbing.BlobObject)
	o.SetSize(int64(len(content)))
	if _, err := o.Write(content); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("writing note blob: %w", err)
	}
	return s.writeObject(o)
}

// notesObjectsToSend lists the objects the remote lacks to accept notes
// commit head: the commits on its first-parent chain down to one the remote
// has (or last confirmed), each with the trees and blobs that differ from
// its first parent's. A merge's second parent came from the remote, so its
// notes are not sent again. (The generic objectsToSend would fall back to a
// walk of the whole history at the first merge, and a fleet merges often.)
func (s *Store) notesObjectsToSend(head plumbing.Hash, remoteHas map[plumbing.Hash]bool) ([]plumbing.Hash, error) {
	pushed, err := s.refHash(notesPushedRef)
	if err != nil {
		return nil, err
	}
	seen := map[plumbing.Hash]bool{}
	var out []plumbing.Hash
	for cur, steps := head, 0; !cur.IsZero() && !remoteHas[cur] && cur != pushed; steps++ {
		if steps == maxPendingWalk {
			return nil, fmt.Errorf("more than %d notes commits to push", maxPendingWalk)
		}
		c, err := s.commitObject(cur)
		if err != nil {
			return nil, err
		}
		out = append(out, cur)
		for _, theirs := range c.ParentHashes[min(1, len(c.ParentHashes)):] {
			notes, err := s.readNotes(theirs)
			if err != nil {
				return nil, err
			}
			for _, blob := range notes {
				seen[blob] = true
			}
		}
		parentTree := plumbing.ZeroHash
		if len(c.ParentHashes) > 0 {
			pc, err := s.commitObject(c.ParentHashes[0])
			if err != nil {
				return nil, err
			}
			parentTree = pc.TreeHash
		}
		if out, err = s.diffObjects(c.TreeHash, parentTree, seen, out); err != nil {
			return nil, err
		}
		if len(c.ParentHashes) == 0 {
			break
		}
		cur = c.ParentHashes[0]
	}
	return out, nil
}
