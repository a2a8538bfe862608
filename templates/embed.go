// Package templates holds Grape's golden Terraform modules — vpc, eks, rds and
// karpenter — embedded in the binary. Each directory is a normal Terraform
// module (variables.tf, main.tf, outputs.tf, versions.tf, README.md); VERSION
// names the set. The render package reads the modules' variables from these
// files, so they are the single source of truth for what an intent may set.
//
// policies/ holds Grape's default policy pack (Rego, read by package policy).
// It is embedded apart from the modules and is not part of FS(), so it is
// not part of the template set's digest: the digest says what a rendering was
// made from and the policies judge the plan, not the rendering. A policy
// change must not make every config's next rendering look different; the
// policies a plan was judged by are recorded in its own digest instead (the
// Grape-Policies commit trailer).
package templates

import (
	"embed"
	"io/fs"
)

//go:embed VERSION .terraform.lock.hcl vpc eks rds karpenter
var files embed.FS

//go:embed policies
var policyFiles embed.FS

// FS returns the embedded template set: VERSION plus one directory per module.
func FS() fs.FS { return files }

// Policies returns the default policy pack: the .rego files of policies/
// (with their *_test.rego tests), at the root of the returned file system.
func Policies() fs.FS {
	sub, _ := fs.Sub(policyFiles, "policies") // errs only on an invalid path
	return sub
}
