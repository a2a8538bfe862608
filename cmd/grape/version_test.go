package main

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/grapehq/grape/internal/testsupport"
)

// TestVersionNamesTheEngine: grape version says which engine the binary is
// and its version, for terraform and OpenTofu alike.
func TestVersionNamesTheEngine(t *testing.T) {
	t.Parallel()
	c := &cli{t: t, env: map[string]string{}}
	for _, e := range testsupport.Engines(t) {
		out := c.ok("version", "--terraform-binary", e.Binary)
		assert.Regexp(t, `(?m)^engine: `+e.Name+` \d+\.\d+\.\d+\S* \(`, out)
	}
	out := c.ok("version", "--terraform-binary", "/nonexistent/terraform")
	assert.Contains(t, out, "engine: not found (/nonexistent/terraform)")
}
