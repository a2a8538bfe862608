package plandiff

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// canaries are the test passwords gen.sh planted in the plans.
var canaries = []string{"CANARY-tfdata-one", "CANARY-tfdata-two", "CANARY-aws-one", "CANARY-aws-two", "CANARY"}

func loadPlan(t testing.TB, name string) (*tfjson.Plan, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "plans", name+".json"))
	require.NoError(t, err)
	var p tfjson.Plan
	require.NoError(t, json.Unmarshal(raw, &p))
	return &p, raw
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./plandiff -update to create it")
	assert.Equal(t, string(want), got)
}

// TestGolden renders every recorded plan (text and data) and compares with
// the golden files; no canary may appear in either.
func TestGolden(t *testing.T) {
	plans, err := filepath.Glob(filepath.Join("testdata", "plans", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, plans)
	for _, f := range plans {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			p, raw := loadPlan(t, name)
			var sb strings.Builder
			require.NoError(t, Render(&sb, p))
			text := sb.String()
			data, err := json.MarshalIndent(Build(p), "", "  ")
			require.NoError(t, err)
			for _, c := range canaries {
				if strings.Contains(string(raw), c) {
					t.Logf("%s holds canary %s", name, c)
				}
				assert.NotContains(t, text, c, "sensitive value in the rendered plan")
				assert.NotContains(t, string(data), c, "sensitive value in the diff data")
			}
			golden(t, name+".txt", text)
			golden(t, name+".json", string(data)+"\n")
		})
	}
}

// TestCanaryPresentInInput guards the canary test itself: the plans must
// really carry the secrets in plain text, or the absence proves nothing.
func TestCanaryPresentInInput(t *testing.T) {
	for name, canary := range map[string]string{
		"tfdata_create": "CANARY-tfdata-one",
		"tfdata_update": "CANARY-tfdata-two",
		"aws_update":    "CANARY-aws-two",
	} {
		_, raw := loadPlan(t, name)
		assert.Contains(t, string(raw), canary, name)
	}
}

// TestDriftNote: terraform lists a drifted object under "Objects have
// changed outside of Terraform" only for the attributes the plan depends on
// (relevant_attributes). The recorded drift plan reverts the tags itself, so
// terraform listed none; here the VPC's tags are marked relevant, as a
// resource reading them would make them, and the note must show exactly
// that attribute, old -> new, and nothing of the other drifted resources.
func TestDriftNote(t *testing.T) {
	p, _ := loadPlan(t, "aws_drift")
	require.Empty(t, p.RelevantAttributes)
	p.RelevantAttributes = []tfjson.ResourceAttribute{{Resource: "aws_vpc.this", Attribute: []json.RawMessage{json.RawMessage(`"tags"`)}}}
	var sb strings.Builder
	require.NoError(t, Render(&sb, p))
	text := sb.String()
	note, plan, ok := strings.Cut(text, "Terraform will perform the following actions:")
	require.True(t, ok, text)
	assert.Contains(t, note, "Note: Objects have changed outside of Terraform")
	assert.Contains(t, note, "  # aws_vpc.this has changed")
	assert.Contains(t, note, `~ "team"      = "blue" -> "red"`)
	assert.Contains(t, note, `+ "edited-by" = "console"`)
	assert.NotContains(t, note, "tags_all", "not relevant to the plan")
	assert.NotContains(t, note, "aws_subnet", "its drift is not relevant to the plan")
	assert.Contains(t, plan, `~ "team"      = "red" -> "blue"`)
	golden(t, "aws_drift_relevant.txt", text)

	d := Build(p)
	require.Len(t, d.Drift, 1)
	assert.Equal(t, "aws_vpc.this", d.Drift[0].Address)
	assert.Contains(t, d.Drift[0].Attributes, Attribute{Path: "tags.team", Action: "change", Old: "blue", New: "red"})
}

func TestRedacted(t *testing.T) {
	p, _ := loadPlan(t, "tfdata_update")
	d := Build(p)
	// "blue" also sits in the whole old value of app's output (a map that
	// becomes known after apply).
	red := d.Redacted(func(s string) string {
		return strings.ReplaceAll(strings.ReplaceAll(s, "green", "***"), "blue", "***")
	})
	b, err := json.Marshal(red)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "green")
	assert.NotContains(t, string(b), "blue")
	assert.Contains(t, string(b), `"new":"***"`)
	orig, err := json.Marshal(d)
	require.NoError(t, err)
	assert.Contains(t, string(orig), "green", "Redacted copies; the diff itself is unchanged")
}

// TestWriteTable prints the stored form of each recorded plan, as `grape
// status --diff` does, after a round trip through JSON (as from the row).
func TestWriteTable(t *testing.T) {
	for _, name := range []string{"tfdata_update", "tfdata_noop", "aws_update"} {
		t.Run(name, func(t *testing.T) {
			p, _ := loadPlan(t, name)
			b, err := json.Marshal(Build(p))
			require.NoError(t, err)
			var d Diff
			require.NoError(t, json.Unmarshal(b, &d))
			var sb strings.Builder
			require.NoError(t, WriteTable(&sb, &d))
			for _, c := range canaries {
				assert.NotContains(t, sb.String(), c)
			}
			golden(t, name+".table", sb.String())
		})
	}
}
