package gitstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/grapehq/grape/redact"
)

// ConflictError means the remote changed files under the config's own path
// since the store last saw it. Nothing was pushed: the deployment must fail
// rather than overwrite someone else's change.
type ConflictError struct {
	// Path is clusters/<cluster>/<config>.
	Path string
	// Remote is the workspace URL (credentials redacted), or the local
	// workspace directory.
	Remote string
	// Base is the commit the store had last seen; Tip the commit that has a
	// different Path.
	Base string
	Tip  string
}

func (e *ConflictError) Error() string {
	base := e.Base
	if base == "" {
		base = "(no commit)"
	}
	return fmt.Sprintf("git conflict: %s changed %s (%s → %s) outside this agent; not overwriting it — "+
		"review the change, then re-run the deployment to commit over it", e.Remote, e.Path, short(base), short(e.Tip))
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// ErrPushRejected is wrapped by the error Commit returns when the remote
// refused the push for a reason other than a concurrent update (a protected
// branch, a hook).
var ErrPushRejected = errors.New("push rejected by the remote")

// ErrRemoteBusy is wrapped by the error Commit returns when the remote
// branch kept moving through all PushRetries attempts.
var ErrRemoteBusy = errors.New("remote branch kept moving")

// RemoteError is a failure to talk to the remote workspace. Its text names
// the URL with credentials redacted; Unwrap gives go-git's error, so
// errors.Is works with transport.ErrAuthenticationRequired,
// transport.ErrRepositoryNotFound, syscall.ECONNREFUSED and the like.
type RemoteError struct {
	Op  string // e.g. "pushing to"
	URL string // redacted
	Err error
}

func (e *RemoteError) Error() string {
	msg := strings.TrimRight(redact.Text(e.Err.Error()), ": \n")
	if errors.Is(e.Err, transport.ErrAuthenticationRequired) || errors.Is(e.Err, transport.ErrAuthorizationFailed) {
		msg += " (check the workspace credentials: " + EnvToken + ", or " + EnvUsername + " and " + EnvPassword + ", or the SSH key)"
	}
	return fmt.Sprintf("%s git workspace %s: %s", e.Op, e.URL, msg)
}

func (e *RemoteError) Unwrap() error { return e.Err }
