package gitstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/revlist"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/grapehq/grape/internal/backoff"
	"github.com/grapehq/grape/redact"
)

// remote is the workspace's upstream repository.
type remote struct {
	url      remoteURL
	ep       *transport.Endpoint
	auth     transport.AuthMethod
	caBundle []byte
	tr       transport.Transport
}

func newRemote(opts Options) (*remote, error) {
	u, err := parseRemoteURL(opts.URL)
	if err != nil {
		return nil, err
	}
	auth, err := opts.Auth.authMethod(u)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", u.display, err)
	}
	ep, err := transport.NewEndpoint(u.clean)
	if err != nil {
		return nil, fmt.Errorf("parsing workspace URL %s: %w", u.display, err)
	}
	r := &remote{url: u, ep: ep, auth: auth}
	if opts.CAFile != "" {
		if r.caBundle, err = os.ReadFile(opts.CAFile); err != nil {
			return nil, fmt.Errorf("reading CA file for %s: %w", u.display, err)
		}
		ep.CaBundle = r.caBundle
	}
	if r.tr, err = client.NewClient(ep); err != nil {
		return nil, fmt.Errorf("workspace URL %s: %w", u.display, err)
	}
	return r, nil
}

func (r *remote) errorf(op string, err error) error {
	var re *RemoteError
	if errors.As(err, &re) {
		return err
	}
	return &RemoteError{Op: op, URL: r.url.display, Err: unwrapGoGit(err)}
}

// unwrapGoGit peels go-git's error wrappers, which do not implement Unwrap,
// so errors.Is sees the network error underneath.
func unwrapGoGit(err error) error {
	for {
		switch e := err.(type) { //nolint:errorlint // go-git's wrappers lack Unwrap, so errors.As cannot see through them; this peels them one layer at a time
		case *plumbing.UnexpectedError:
			err = e.Err
		case *plumbing.PermanentError:
			err = e.Err
		default:
			return err
		}
	}
}

// pushSession is one receive-pack conversation with the remote: what it
// advertised, then at most one update.
type pushSession struct {
	sess transport.ReceivePackSession
	caps *capability.List
	tip  plumbing.Hash          // the branch on the remote; zero if missing
	has  map[plumbing.Hash]bool // every commit the remote advertised
	refs map[plumbing.ReferenceName]plumbing.Hash
}

func (p *pushSession) close() {
	if p != nil && p.sess != nil {
		_ = p.sess.Close()
	}
}

// openPush connects to the remote's receive-pack and reads its refs. go-git
// dials some transports without a context (git://, ssh), so the dial runs
// in a goroutine that the context can abandon; a session that connects
// after the caller gave up is closed.
func (r *remote) openPush(ctx context.Context, branch plumbing.ReferenceName) (*pushSession, error) {
	type result struct {
		sess transport.ReceivePackSession
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		sess, err := r.tr.NewReceivePackSession(r.ep, r.auth)
		ch <- result{sess, err}
	}()
	var sess transport.ReceivePackSession
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, res.err
		}
		sess = res.sess
	case <-ctx.Done():
		go func() {
			if res := <-ch; res.sess != nil {
				_ = res.sess.Close()
			}
		}()
		return nil, ctx.Err()
	}
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		_ = sess.Close()
		return nil, err
	}
	refs, err := ar.AllReferences()
	if err != nil {
		_ = sess.Close()
		return nil, fmt.Errorf("reading advertised refs: %w", err)
	}
	p := &pushSession{sess: sess, caps: ar.Capabilities, has: map[plumbing.Hash]bool{},
		refs: map[plumbing.ReferenceName]plumbing.Hash{}}
	for name, ref := range refs {
		if ref.Type() != plumbing.HashReference {
			continue
		}
		p.has[ref.Hash()] = true
		p.refs[name] = ref.Hash()
		if name == branch {
			p.tip = ref.Hash()
		}
	}
	return p, nil
}

// fetch brings the remote branch into the tracking ref.
func (r *remote) fetch(ctx context.Context, s *Store) error {
	return r.fetchSpecs(ctx, s, s.fetchSpec())
}

// fetchSpecs fetches what the refspecs name.
func (r *remote) fetchSpecs(ctx context.Context, s *Store, specs ...config.RefSpec) error {
	rem := git.NewRemote(s.st, &config.RemoteConfig{Name: remoteName, URLs: []string{r.url.clean}})
	err := rem.FetchContext(ctx, &git.FetchOptions{
		RemoteName: remoteName,
		RefSpecs:   specs,
		Auth:       r.auth,
		CABundle:   r.caBundle,
		Tags:       git.NoTags,
	})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return err
}

// rejectedError is a push the remote answered with "ng" for our ref.
type rejectedError struct {
	status string
	remote string // the remote's side-band messages (hook output)
}

func (e *rejectedError) Error() string {
	msg := e.status
	if e.remote != "" {
		msg += " (remote said: " + e.remote + ")"
	}
	return msg
}

// push sends commit new as the remote branch's successor of old, with a
// pack of exactly the objects the remote lacks.
func (s *Store) push(ctx context.Context, p *pushSession, old, new plumbing.Hash) error {
	return s.pushRef(ctx, p, s.branch, old, new)
}

// pushRef updates ref on the remote from old to new; the remote refuses it
// if ref moved meanwhile (no force, ever).
func (s *Store) pushRef(ctx context.Context, p *pushSession, ref plumbing.ReferenceName, old, new plumbing.Hash) error {
	var pack bytes.Buffer
	err := s.withObjects(ctx, func() error {
		var objs []plumbing.Hash
		var err error
		if ref == NotesRef {
			objs, err = s.notesObjectsToSend(new, p.has)
		} else {
			objs, err = s.objectsToSend(new, p.has)
		}
		if err != nil {
			return err
		}
		useRefDeltas := !p.caps.Supports(capability.OFSDelta)
		if _, err := packfile.NewEncoder(&pack, s.st, useRefDeltas).Encode(objs, 10); err != nil {
			return fmt.Errorf("packing %d objects: %w", len(objs), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	req := packp.NewReferenceUpdateRequestFromCapabilities(p.caps)
	req.Commands = []*packp.Command{{Name: ref, Old: old, New: new}}
	req.Packfile = io.NopCloser(&pack)
	progress := &cappedBuffer{max: 4096}
	switch {
	case p.caps.Supports(capability.Sideband64k):
		_ = req.Capabilities.Set(capability.Sideband64k)
		req.Progress = progress
	case p.caps.Supports(capability.Sideband):
		_ = req.Capabilities.Set(capability.Sideband)
		req.Progress = progress
	}
	report, err := p.sess.ReceivePack(ctx, req)
	if err == nil {
		return nil
	}
	if report != nil {
		status := err.Error()
		for _, cs := range report.CommandStatuses {
			if cs.Status != "ok" {
				status = cs.Status
			}
		}
		return &rejectedError{status: status, remote: strings.TrimSpace(progress.String())}
	}
	return err
}

// maxSendWalk bounds the commit walk of objectsToSend; beyond it go-git's
// general (history-sized) reachability walk is used.
const maxSendWalk = 1000

// objectsToSend lists the objects the remote needs to accept commit: walking
// back from it to the first commit the remote advertised, each commit plus
// the trees and blobs that differ from its parent's tree. Normally that is
// one commit on top of the remote tip: a handful of objects, found without
// touching the rest of the history. (go-git's push instead enumerates every
// object reachable from the remote's refs to exclude them, which costs time
// proportional to the whole history.)
func (s *Store) objectsToSend(commit plumbing.Hash, remoteHas map[plumbing.Hash]bool) ([]plumbing.Hash, error) {
	seen := map[plumbing.Hash]bool{}
	var out []plumbing.Hash
	for cur, steps := commit, 0; !remoteHas[cur]; steps++ {
		c, err := s.commitObject(cur)
		if err != nil {
			return nil, err
		}
		if steps == maxSendWalk || len(c.ParentHashes) > 1 {
			return s.objectsToSendSlow(commit, remoteHas)
		}
		out = append(out, cur)
		parentTree := plumbing.ZeroHash
		if len(c.ParentHashes) == 1 {
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

func (s *Store) objectsToSendSlow(commit plumbing.Hash, remoteHas map[plumbing.Hash]bool) ([]plumbing.Hash, error) {
	var ignore []plumbing.Hash
	for h := range remoteHas {
		if s.hasObject(h) {
			ignore = append(ignore, h)
		}
	}
	objs, err := revlist.Objects(s.st, []plumbing.Hash{commit}, ignore)
	if err != nil {
		return nil, fmt.Errorf("listing objects to push: %w", err)
	}
	return objs, nil
}

// connectTimeout bounds connecting and reading the remote's refs, so an
// unreachable host (packets dropped, no refusal) fails a deployment in
// seconds rather than after the OS's connect timeout of two minutes.
const connectTimeout = 10 * time.Second

// retry runs op with a timeout per try until it succeeds, fails for a
// reason retrying cannot fix, or the next backoff would end past deadline.
func (s *Store) retry(ctx context.Context, deadline time.Time, timeout time.Duration, op string, f func(ctx context.Context) error) error {
	retry := backoff.New(backoff.Policy{Initial: 200 * time.Millisecond, Max: 2 * time.Second})
	start := time.Now()
	for try := 1; ; try++ {
		opCtx, cancel := context.WithTimeout(ctx, timeout)
		err := f(opCtx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !transient(err) || time.Now().Add(retry.Peek()).After(deadline) {
			if try > 1 {
				return fmt.Errorf("%w (gave up after %d tries in %v)", err, try, time.Since(start).Round(time.Millisecond))
			}
			return err
		}
		wait := retry.Next()
		s.log.Warn("git remote unavailable; retrying", "op", op, "url", s.remote.url.display,
			"try", try, "backoff", wait, "error", redact.Text(err.Error()))
		if backoff.Sleep(ctx, wait) != nil {
			return err
		}
	}
}

// transient says whether err is a network failure worth retrying: the
// server is restarting, overloaded or briefly unreachable. Authentication,
// a missing repository and protocol errors are not.
func transient(err error) bool {
	err = unwrapGoGit(err)
	if errors.Is(err, transport.ErrAuthenticationRequired) || errors.Is(err, transport.ErrAuthorizationFailed) ||
		errors.Is(err, transport.ErrRepositoryNotFound) || errors.Is(err, context.Canceled) {
		return false
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED,
		syscall.EPIPE, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, errno) {
			return true
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	var httpErr *githttp.Err
	if errors.As(err, &httpErr) {
		switch httpErr.StatusCode() {
		case 429, 502, 503, 504:
			return true
		}
	}
	return false
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
