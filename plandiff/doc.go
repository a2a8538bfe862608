// Package plandiff shows a saved terraform plan attribute by attribute.
//
// It works from the plan JSON the runner already reads (`terraform show
// -json` of the saved plan), so showing the diff costs no terraform
// invocation. Two forms come out of one plan:
//
//   - Render writes the plan the way terraform's human plan output lays it
//     out: per resource the action ("will be updated in-place"), then each
//     changed attribute with old -> new, nested objects and lists, "(known
//     after apply)" for unknowns, "(sensitive value)" for anything marked
//     sensitive before or after, "# forces replacement" on the attributes
//     that force one, the "Objects have changed outside of Terraform" note
//     from resource_drift, output changes, and "No changes." for a no-op.
//   - Build returns the same changes as data (Diff) for the deployment row:
//     one entry per resource with its changed leaf attributes (path, old,
//     new). Sensitive values are never copied into it.
//
// # Differences from terraform's own renderer
//
// The plan JSON carries no provider schema, so nested blocks cannot be told
// from object-typed attributes: both are shown as `name = { … }` (lists of
// blocks as `name = [ { … } ]`), and map keys below the top level are quoted.
// A value is redacted as a whole where terraform marks it sensitive at that
// level, never split further. Lists are compared element by element after
// aligning equal elements (longest common subsequence), as terraform does.
//
// # Never a sensitive value
//
// A value is replaced by "(sensitive value)" when the before_sensitive or
// after_sensitive marker of it (or of any object holding it) is true, in the
// text and in Diff alike; the tests plant a canary and look for it in both.
// Output changes follow the output's own sensitive flag.
package plandiff
