// Package policy judges a terraform plan with Rego policies (Open Policy
// Agent, Rego v1) before anything is applied, with conftest's conventions so
// the policies a platform team already runs in CI work unchanged.
//
// # Sources and sets
//
// Policies are the .rego files of one or more directories, of a git
// repository at a ref (fetched like --templates-git, package gitfetch), and
// of Grape's default pack (templates/policies, embedded). Files named
// *_test.rego are tests: `grape policy test` runs them, the agent does not
// load them. Everything under sets/<name>/ in a source belongs to the policy
// set <name> and judges only configs whose policy_set is <name>, together
// with every file outside sets/. A config without a set is judged by the
// files outside sets/ alone.
//
// # Rules
//
// In the namespaces given (default: package main), rules named deny,
// violation or warn — or deny_<x>, violation_<x>, warn_<x> — are sets of
// messages: strings, or objects whose "msg" is the message (other keys are
// dropped: they could carry plan values). A rule of another shape (a
// boolean, an object keyed by message) is refused when the policies are
// compiled, as it would silently never fire. conftest exceptions work too:
// `exception contains rules if { … rules := ["x"] }` in the rule's package
// drops the messages of deny_x and violation_x. The default pack lives in
// packages grape.defaults.*, always judged whatever the namespaces.
//
// The input is the plan of `terraform show -json` with one more key, grape:
// the cluster, config, config_version, action, intent, requested_by,
// templates_version, templates_digest, policy_set and deployment_id (Meta).
//
// # Compiling and evaluating
//
// Compile parses and compiles every set once, at agent start: a file that
// does not parse or compile is a *CompileError naming file:line and the
// compiler's message, and the agent refuses to start. Policies cannot use
// http.send, net.lookup_ip_addr or opa.runtime (they would let a policy send
// the plan, or read the agent's environment, out); print is compiled away.
// Builtin errors are errors (StrictBuiltinErrors), not silently undefined:
// a guard that fails must fail closed.
//
// Evaluate runs the compiled queries on one plan, bounded by a timeout
// (default 10 s). Any evaluation failure — a conflict, a builtin or type
// error, the bound reached, a panic inside the engine — is an *EvalError,
// which the pipeline turns into a failed deployment of kind policy.
//
// # What leaves the agent
//
// The plan holds sensitive values in clear; it is never returned or
// stored. A Result holds verdicts only: kind, rule, package, file and line,
// message. Messages are written by policies and may quote plan values, so
// Evaluate masks the plan's own sensitive values (those marked by
// before_sensitive/after_sensitive, sensitive outputs and variables) and
// then applies Input.Redact — the agent passes its log redactor, which knows
// its environment's secrets — before messages are cut to length. Evaluation
// error messages go through the same redaction.
//
// The digest of a set (Engine.Digest) is "sha256:" over its files' paths
// (relative to their source) and contents, sorted: the Grape-Policies commit
// trailer, and the same wherever the files are checked out.
package policy
