// Package gitstore is Grape's audit trail: every deployment becomes a git
// commit in a workspace repository, and terraform later runs on exactly that
// commit's files.
//
// # Layout
//
// The workspace holds one directory per deployed config,
// clusters/<cluster>/<config>/, with the full rendered tree (root module,
// tfvars, module sources as used), plus a root .gitignore that keeps state,
// plans and provider caches out. A commit replaces that one directory and
// nothing else, so files that disappear from a rendering are deleted in the
// commit.
//
// # Every deployment is a commit
//
// When a rendering is byte-for-byte identical to what the parent commit holds,
// Commit still writes a commit: an empty one (same tree as its parent) whose
// message and trailers name the deployment. Reusing the previous SHA instead
// would leave a deployment without its own record of who asked for what and
// when; an empty commit keeps "one deployment, one commit" true and costs a
// few hundred bytes. Result.Empty reports it.
//
// # Local and remote workspaces
//
// In local mode (Options.URL empty) the workspace is a repository at
// Options.Dir, created bare if missing. In remote mode the store keeps a bare
// clone at Options.Dir and pushes every commit to Options.URL (HTTPS, SSH,
// git://, file://). A commit is not reported as made until the remote
// accepted it.
//
// # No working copy
//
// The store never checks a branch out. Commits are built directly in the
// object database: the new blobs and the trees along
// clusters/<cluster>/<config> are written, every other tree entry is reused
// by hash from the parent, and the branch moves by compare-and-swap. Cost per
// commit therefore depends on the size of one rendering, not on the size of
// the workspace or the length of its history. Pushes send exactly the objects
// the commit added (the remote has the parent), instead of letting go-git's
// generic push walk the whole history to find out what the remote lacks —
// that walk grows linearly with the number of commits (see bench_test.go).
// Checkout reads a commit's subtree straight from the object database.
//
// # Concurrency and conflicts
//
// Writes are serialised per Store. If the remote moved since the store last
// saw it (a colleague or another agent pushed), the store fetches and checks
// whether anything under the same clusters/<cluster>/<config> path changed:
// if not, the commit is rebuilt on the new tip (Body is recomputed) and
// pushed again, a bounded number of times; if so, Commit fails with a
// *ConflictError and overwrites nothing. The store then takes the remote tip
// as its new base, so deliberately re-running the deployment writes the
// rendering over the other change as an ordinary, reviewable commit.
//
// # History that cannot be rewritten silently
//
// Change.Require names the last commit the cluster's agents recorded as
// pushed. Commit checks that the branch tip still contains it before
// building on the tip; after a force-push or a deleted branch it fails with
// a *HistoryError naming the missing commit and the new tip, and pushes
// nothing. The walk from the tip stops at commits older than the required
// one (by a day of clock skew), so it costs the commits since then.
//
// # Outcome notes
//
// AddNote appends an event to a commit's note in refs/notes/grape (Event
// formats one) and pushes that ref. The remote's notes are never
// overwritten: if they moved, they are fetched and merged — notes on other
// commits kept as they are, two versions of one note merged event by event —
// and the push is retried. A note the remote cannot take stays in the clone;
// PushPendingNotes retries, PendingNotes counts what waits (the notes commits
// above refs/grape/notes-pushed, the last state the remote confirmed).
// Notes trees are written flat (one entry per commit), which git reads as
// it reads its own fan-out.
//
// # Nothing secret
//
// Commit refuses paths that hold state or plans (*.tfstate*, *.tfplan,
// .terraform/, terraform.tfstate.d/, CLI configs) and content that looks like
// a private key, an AWS access key or a terraform state file. Errors name the
// remote URL with credentials redacted.
package gitstore
