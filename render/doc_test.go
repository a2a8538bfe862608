package render

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	docPath     = "../docs/intent.md"
	docBegin    = "<!-- BEGIN GENERATED: examples and module reference; refresh with go test ./render -run TestIntentDoc -update -->\n"
	docEnd      = "<!-- END GENERATED -->\n"
	examplesDir = "testdata/intents"
)

// TestIntentDoc keeps the generated part of docs/intent.md (an example per
// module, from testdata/intents/example-*.json, and the input reference,
// from the templates) in step with the code. Refresh with -update.
func TestIntentDoc(t *testing.T) {
	c := catalog(t)
	var gen bytes.Buffer
	gen.WriteString("\n## Examples\n\nOne intent per module, each valid and rendered by the golden tests (`render/testdata/intents/`).\n")
	paths, err := filepath.Glob(filepath.Join(examplesDir, "example-*.json"))
	require.NoError(t, err)
	sort.Slice(paths, func(i, j int) bool { return moduleRank(c, paths[i]) < moduleRank(c, paths[j]) })
	require.Len(t, paths, len(c.Modules()), "one example per module")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		_, err = c.Validate(b)
		require.NoError(t, err, p)
		fmt.Fprintf(&gen, "\n### %s\n\n```json\n%s\n```\n", exampleModule(p), strings.TrimSpace(string(b)))
	}
	gen.WriteString("\n## Module reference\n\n")
	require.NoError(t, c.WriteMarkdownReference(&gen))

	doc, err := os.ReadFile(docPath)
	require.NoError(t, err)
	head, rest, ok := strings.Cut(string(doc), docBegin)
	require.True(t, ok, "%s lacks the line %q", docPath, docBegin)
	_, tail, ok := strings.Cut(rest, docEnd)
	require.True(t, ok, "%s lacks the line %q", docPath, docEnd)
	want := head + docBegin + gen.String() + docEnd + tail
	if *update {
		require.NoError(t, os.WriteFile(docPath, []byte(want), 0o644))
		return
	}
	require.Equal(t, want, string(doc), "%s is stale: run go test ./render -run TestIntentDoc -update", docPath)
}

func exampleModule(p string) string {
	return strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "example-"), ".json")
}

func moduleRank(c *Catalog, p string) int {
	for i, n := range c.ModuleNames() {
		if n == exampleModule(p) {
			return i
		}
	}
	return len(c.ModuleNames())
}
