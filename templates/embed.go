// Package templates holds Grape's golden Terraform modules — vpc, eks, rds and
// karpenter — embedded in the binary. Each directory is a normal Terraform
// module (variables.tf, main.tf, outputs.tf, versions.tf, README.md); VERSION
// names the set. The render package reads the modules' variables from these
// files, so they are the single source of truth for what an intent may set.
package templates

import (
	"embed"
	"io/fs"
)

//go:embed VERSION vpc eks rds karpenter
var files embed.FS

// FS returns the embedded template set: VERSION plus one directory per module.
func FS() fs.FS { return files }
