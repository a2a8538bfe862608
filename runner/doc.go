// Package runner runs terraform on one run directory: init, plan to a saved
// plan file, apply of exactly that file, outputs, and an optional Infracost
// estimate. It is a thin layer over hashicorp/terraform-exec that adds what an
// unattended agent needs and the library leaves out:
//
//   - Isolation. Every command runs in the job's own directory, in its own
//     process group (terraform-exec sets Setpgid), with an environment built
//     only from an allowlist (see BuildEnv): AWS_*, TF_* (minus the variables
//     the runner or terraform-exec control), proxies, PATH, HOME, TMPDIR,
//     SSL_CERT_FILE/DIR, plus what the operator allowlists. The agent's own
//     secrets (GRAPE_*, DATABASE_URL) are never passed, not even when an
//     allowlist pattern would match them.
//
//   - HOME is the agent's HOME, not a per-run one. Credentials stay on the
//     agent machine ("Zero-Key"), and that is where operators keep them:
//     ~/.aws/config and ~/.aws/credentials (or AWS_CONFIG_FILE /
//     AWS_SHARED_CREDENTIALS_FILE), ~/.terraform.d/credentials.tfrc.json for
//     private registries, ~/.ssh for git module sources. A per-run HOME would
//     break all of them and isolate nothing that matters: terraform writes
//     nothing to HOME once checkpoint is disabled and the CLI config and
//     plugin cache live in Config.DataDir.
//
//   - Cancellation that releases state locks. When the context is cancelled
//     terraform-exec sends SIGINT so terraform can stop cleanly and unlock
//     the state. terraform-exec only ever signals the terraform pid, but
//     provider plugins and provisioner commands are its children in the same
//     process group and may outlive it; so the runner finds that group in
//     /proc (a group led by its own child, with a member whose cwd is the run
//     directory; looked up when terraform prints its first line and again on
//     cancel) and, after Timeouts.Grace or as soon as terraform exits,
//     SIGKILLs whatever is left in it. Cancellation causes are read with
//     context.Cause: cancel a job's context with errkind.ErrCancelRequested or
//     errkind.ErrShutdown. Per-phase timeouts end a command the same way and are
//     reported as "timed out in <phase> after <d>".
//
//   - Machine-readable output, human-readable logs. init, plan and apply run
//     with -json; errors are classified from terraform's diagnostics and exit
//     codes, never from human text (a held state lock is the diagnostic
//     "Error acquiring the state lock", whose detail carries the lock info).
//     Each JSON message is rendered to Job.Stdout as its @message (and
//     diagnostics the way terraform prints them), so the live log reads like
//     terraform's normal output. A side effect worth having: the -json stream
//     names resources and actions but prints no attribute values, so planned
//     values never reach the log. Reviewers read addresses and actions from
//     PlanSummary.
//
//   - A shared provider plugin cache and a CLI config the runner writes
//     (<DataDir>/terraformrc with plugin_cache_dir and, when ProviderMirror is
//     set, a filesystem_mirror). terraform does not promise that concurrent
//     inits can share a cache, so Init holds an flock on the cache while it
//     runs.
//
//   - No terraform process that tells nothing new. A job with InitCache
//     reuses the .terraform of an earlier init of the same root module
//     when its fingerprint (engine, CLI config, backend config, lock file,
//     .tf files) matches, and logs "init: reused from <fingerprint>"; a
//     drift check in sync skips show -json; ApplyOutputs takes the outputs
//     from apply's own -json stream instead of running terraform output.
package runner
