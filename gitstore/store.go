package gitstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Options configure a Store.
type Options struct {
	// Dir is the workspace repository in local mode (created bare if
	// missing; an existing non-bare repository works too, but its working
	// tree is not updated). In remote mode it is where the store keeps its
	// bare clone, e.g. <data-dir>/workspace.git.
	Dir string
	// URL switches to remote mode: https://, ssh://, git@host:path, git://,
	// file:// or a local path of a bare repository. Credentials in an
	// http(s) URL are used as auth and never stored in the clone.
	URL string
	// Branch is the branch commits go to; default "main".
	Branch string
	// Auth are the remote's credentials; see AuthFromEnv.
	Auth AuthOptions
	// CAFile is a PEM bundle to trust for an HTTPS remote with a private CA.
	CAFile string
	// Author is author and committer of every commit; default DefaultAuthor.
	Author Signature
	// PushRetries bounds how often a commit is rebuilt on a new remote tip
	// after the remote moved (non-fast-forward); default 5.
	PushRetries int
	// NetworkRetry is the total time spent retrying transient network errors
	// (connection refused or reset, timeouts, HTTP 502/503/504) per Commit,
	// with exponential backoff; default 8s so a deployment fails well before
	// terraform would start. Negative disables retries.
	NetworkRetry time.Duration
	// Timeout bounds each network operation (listing refs, fetching,
	// pushing); default 60s.
	Timeout time.Duration
	// SignKeyFile is an armored OpenPGP private key; when set every commit
	// is signed with it so reviewers can verify it came from the agent.
	SignKeyFile       string
	SignKeyPassphrase string
	// Logger receives debug and warning records; default slog.Default().
	Logger *slog.Logger
}

const (
	defaultBranch       = "main"
	defaultPushRetries  = 5
	defaultNetworkRetry = 8 * time.Second
	defaultTimeout      = 60 * time.Second
	remoteName          = "origin"
)

func (o *Options) setDefaults() {
	if o.Branch == "" {
		o.Branch = defaultBranch
	}
	if o.Author == (Signature{}) {
		o.Author = DefaultAuthor
	}
	if o.PushRetries <= 0 {
		o.PushRetries = defaultPushRetries
	}
	if o.NetworkRetry == 0 {
		o.NetworkRetry = defaultNetworkRetry
	}
	if o.NetworkRetry < 0 {
		o.NetworkRetry = 0
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store writes deployments as commits into a workspace repository and reads
// them back. Its methods are safe for concurrent use; writes are serialised.
type Store struct {
	opts   Options
	log    *slog.Logger
	branch plumbing.ReferenceName
	// tracking is refs/remotes/origin/<branch> in remote mode, so people
	// who look into the clone with git see what the remote had.
	tracking plumbing.ReferenceName
	st       *filesystem.Storage
	remote   *remote // nil in local mode
	signer   *openpgp.Entity

	// writeSem serialises Commit (a channel so a waiting Commit honours its
	// context). objSem guards the object storage, which go-git does not
	// make safe for concurrent use; it is held for object work only, never
	// across a network round trip, so Checkout does not wait for a push.
	writeSem chan struct{}
	objSem   chan struct{}
	// notesSem serialises adding and pushing notes (held across the
	// network, like writeSem, but apart from it: a note never waits for a
	// deployment's commit).
	notesSem chan struct{}

	// written counts objects written since the loose objects were last
	// counted (guarded by objSem); see upkeep.
	written int

	// unanswered is the last commit whose push failed without a clear
	// answer (guarded by writeSem); see ownUnanswered.
	unanswered plumbing.Hash

	// beforePublish is a test hook run after a commit is built and before
	// it is published, to inject a colleague's push into the race window.
	beforePublish func(attempt int)
}

// Open opens (or creates) the workspace. In remote mode a missing clone is
// created and filled from the remote, so a wrong URL or credentials fail
// here, naming the URL; an existing clone is opened without network access
// (Commit fetches before each commit).
func Open(ctx context.Context, opts Options) (*Store, error) {
	opts.setDefaults()
	if opts.Dir == "" {
		return nil, errors.New("opening git workspace: Dir is required")
	}
	if err := opts.Author.validate(); err != nil {
		return nil, fmt.Errorf("opening git workspace: %w", err)
	}
	if validSegment("branch", opts.Branch) != nil {
		return nil, fmt.Errorf("opening git workspace: invalid branch name %q", opts.Branch)
	}
	s := &Store{
		opts:     opts,
		log:      opts.Logger,
		branch:   plumbing.NewBranchReferenceName(opts.Branch),
		tracking: plumbing.NewRemoteReferenceName(remoteName, opts.Branch),
		writeSem: make(chan struct{}, 1),
		objSem:   make(chan struct{}, 1),
		notesSem: make(chan struct{}, 1),
	}
	if opts.SignKeyFile != "" {
		e, err := loadSigner(opts.SignKeyFile, opts.SignKeyPassphrase)
		if err != nil {
			return nil, fmt.Errorf("opening git workspace: %w", err)
		}
		s.signer = e
	}
	if opts.URL != "" {
		r, err := newRemote(opts)
		if err != nil {
			return nil, fmt.Errorf("opening git workspace: %w", err)
		}
		s.remote = r
	}
	created, err := s.openStorage()
	if err != nil {
		return nil, err
	}
	if s.remote == nil {
		return s, nil
	}
	if err := s.checkOrigin(created); err != nil {
		s.Close()
		return nil, err
	}
	// A clone whose branch ref is missing was just created (or its first
	// fetch failed): fill it now, so misconfiguration shows at startup.
	if _, err := s.st.Reference(s.branch); errors.Is(err, plumbing.ErrReferenceNotFound) {
		if err := s.initialFetch(ctx); err != nil {
			s.Close()
			return nil, err
		}
	} else if err != nil {
		s.Close()
		return nil, fmt.Errorf("reading %s in %s: %w", s.branch, opts.Dir, err)
	}
	return s, nil
}

// openStorage opens the repository at Dir or creates a bare one. It reports
// whether the repository was created.
func (s *Store) openStorage() (bool, error) {
	dir := s.opts.Dir
	gitDir, create, err := locateGitDir(dir)
	if err != nil {
		return false, err
	}
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("creating workspace %s: %w", dir, err)
		}
	}
	s.st = filesystem.NewStorageWithOptions(osfs.New(gitDir), cache.NewObjectLRUDefault(),
		filesystem.Options{MaxOpenDescriptors: 16})
	if !create {
		return false, nil
	}
	_, err = git.InitWithOptions(s.st, nil, git.InitOptions{DefaultBranch: s.branch})
	if err != nil {
		return false, fmt.Errorf("initialising workspace repository %s: %w", dir, err)
	}
	return true, nil
}

// locateGitDir finds the git directory for dir: dir/.git of a non-bare
// repository, dir itself for a bare one, or dir to be created when it is
// missing or empty.
func locateGitDir(dir string) (gitDir string, create bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		return dir, true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("opening workspace %s: %w", dir, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, ".git")); err == nil && fi.IsDir() {
		return filepath.Join(dir, ".git"), false, nil
	}
	for _, name := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", false, fmt.Errorf("opening workspace %s: not empty and not a git repository (no %s)", dir, name)
		}
	}
	return dir, false, nil
}

// checkOrigin records the remote in a new clone's config (without
// credentials), or makes sure an existing clone belongs to the same remote:
// silently switching remotes would mix two unrelated histories.
func (s *Store) checkOrigin(created bool) error {
	cfg, err := s.st.Config()
	if err != nil {
		return fmt.Errorf("reading config of workspace clone %s: %w", s.opts.Dir, err)
	}
	if rc, ok := cfg.Remotes[remoteName]; ok && !created {
		if len(rc.URLs) == 0 || rc.URLs[0] != s.remote.url.clean {
			have := ""
			if len(rc.URLs) > 0 {
				have = DisplayURL(rc.URLs[0])
			}
			return fmt.Errorf("workspace clone %s belongs to %s, not %s: remove it or use another data dir",
				s.opts.Dir, have, s.remote.url.display)
		}
		return nil
	}
	cfg.Remotes[remoteName] = &config.RemoteConfig{
		Name:  remoteName,
		URLs:  []string{s.remote.url.clean},
		Fetch: []config.RefSpec{s.fetchSpec()},
	}
	if err := s.st.SetConfig(cfg); err != nil {
		return fmt.Errorf("writing config of workspace clone %s: %w", s.opts.Dir, err)
	}
	return nil
}

func (s *Store) fetchSpec() config.RefSpec {
	return config.RefSpec(fmt.Sprintf("+%s:%s", s.branch, s.tracking))
}

// Close releases open pack files.
func (s *Store) Close() error {
	if s.st == nil {
		return nil
	}
	return s.st.Close()
}

// Head returns the SHA of the branch tip as this store last saw it (its own
// last commit or the remote tip it last fetched), or "" for a workspace
// without commits. It does not contact the remote.
func (s *Store) Head(ctx context.Context) (string, error) {
	if err := s.lockObjects(ctx); err != nil {
		return "", err
	}
	defer s.unlockObjects()
	h, err := s.refHash(s.branch)
	if err != nil {
		return "", err
	}
	if h.IsZero() {
		return "", nil
	}
	return h.String(), nil
}

func (s *Store) lockWrites(ctx context.Context) error {
	select {
	case s.writeSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for another git commit: %w", context.Cause(ctx))
	}
}

func (s *Store) unlockWrites() { <-s.writeSem }

func (s *Store) lockObjects(ctx context.Context) error {
	select {
	case s.objSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the git object store: %w", context.Cause(ctx))
	}
}

func (s *Store) unlockObjects() { <-s.objSem }

// withObjects runs f holding the object-store lock.
func (s *Store) withObjects(ctx context.Context, f func() error) error {
	if err := s.lockObjects(ctx); err != nil {
		return err
	}
	defer s.unlockObjects()
	return f()
}

// refHash reads a reference; a missing one is the zero hash.
func (s *Store) refHash(name plumbing.ReferenceName) (plumbing.Hash, error) {
	ref, err := s.st.Reference(name)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("reading %s in %s: %w", name, s.opts.Dir, err)
	}
	return ref.Hash(), nil
}

// object reads an encoded object. If it is missing, the pack list is
// re-read once: someone may have run git gc on a local workspace, moving
// loose objects into a pack this storage has not indexed yet.
func (s *Store) object(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	o, err := s.st.EncodedObject(t, h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		s.st.Reindex()
		o, err = s.st.EncodedObject(t, h)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", t, h, err)
	}
	return o, nil
}

func (s *Store) hasObject(h plumbing.Hash) bool {
	return s.st.HasEncodedObject(h) == nil
}

func (s *Store) commitObject(h plumbing.Hash) (*object.Commit, error) {
	o, err := s.object(plumbing.CommitObject, h)
	if err != nil {
		return nil, err
	}
	return object.DecodeCommit(s.st, o)
}

func (s *Store) treeObject(h plumbing.Hash) (*object.Tree, error) {
	o, err := s.object(plumbing.TreeObject, h)
	if err != nil {
		return nil, err
	}
	return object.DecodeTree(s.st, o)
}

func (s *Store) blobContent(h plumbing.Hash) ([]byte, error) {
	o, err := s.object(plumbing.BlobObject, h)
	if err != nil {
		return nil, err
	}
	r, err := o.Reader()
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", h, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", h, err)
	}
	return b, nil
}

// writeObject stores an object unless it is already there.
func (s *Store) writeObject(o *plumbing.MemoryObject) (plumbing.Hash, error) {
	h := o.Hash()
	if s.hasObject(h) {
		return h, nil
	}
	if _, err := s.st.SetEncodedObject(o); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("writing %s %s to %s: %w", o.Type(), h, s.opts.Dir, err)
	}
	s.written++
	return h, nil
}
