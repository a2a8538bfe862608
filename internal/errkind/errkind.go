// Package errkind is the one vocabulary for how a deployment failed: the
// values of the deployments.error_kind column (its CHECK constraint lists
// the same strings, store/migrations), which runner's errors carry and store
// writes without any mapping in between, and the causes a run's context is
// cancelled with, shared by the claim loop, the pipeline and terraform's
// runner so errors.Is matches across them.
//
// It imports nothing of Grape's, so runner can use it without depending on
// store.
package errkind

import "errors"

// Kind classifies a failure for the person reading it: what they need to
// know first. The message says the rest; the log holds the detail.
type Kind string

const (
	BadConfig Kind = "bad_config" // the intent or the deployment row is invalid
	Git       Kind = "git"        // committing, pushing or checking out the rendering failed
	Init      Kind = "init"       // terraform init failed (provider install, backend, config syntax)
	Plan      Kind = "plan"       // terraform plan failed (config or provider error)
	Policy    Kind = "policy"     // a policy denied the plan, or could not be evaluated
	Apply     Kind = "apply"      // terraform apply failed (provider/API error, stale plan)
	StateLock Kind = "state_lock" // another process holds the state lock
	// StateMissing: the plan saw an empty state for a config Grape applied
	// and has not destroyed (state lost, moved, or on another agent).
	StateMissing Kind = "state_missing"
	// ControlPlaneBehind: the config version to deploy is older than the
	// audit repository's newest commit of the config (a restored database).
	ControlPlaneBehind Kind = "control_plane_behind"
	AgentLost          Kind = "agent_lost" // the agent died, shut down or lost its lease
	Cancelled          Kind = "cancelled"  // a person cancelled the deployment
	Timeout            Kind = "timeout"    // a terraform phase ran longer than its timeout
	Rejected           Kind = "rejected"   // a person rejected the plan
	// ApprovalRefused: the approved plan no longer means what was approved.
	ApprovalRefused Kind = "approval_refused"
	Internal        Kind = "internal" // anything else: the agent's own failure
)

// Causes to cancel a run's context with (context.WithCancelCause), so
// whoever stops reads why with context.Cause and errors.Is.
var (
	// ErrCancelRequested: a person asked to cancel the deployment.
	ErrCancelRequested = errors.New("cancel requested")
	// ErrShutdown: the agent is shutting down (second signal, drain timeout).
	ErrShutdown = errors.New("agent shut down")
)
