package runner

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/plandiff"
)

// fakeSecret is the basic module's sensitive default; the recorded plan JSON
// holds it in plain text.
const fakeSecret = "s3cr3t"

func loadPlan(t *testing.T, name string) *tfjson.Plan {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "show", name))
	require.NoError(t, err)
	var p tfjson.Plan
	require.NoError(t, json.Unmarshal(b, &p))
	require.Contains(t, string(b), fakeSecret, "fixture should hold the secret, or the no-leak checks prove nothing")
	return &p
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		file string
		want PlanSummary
	}{
		{"create.json", PlanSummary{Add: 3, Resources: []ResourceChange{
			{Address: "terraform_data.greeting", Actions: []string{"create"}},
			{Address: "terraform_data.pinned", Actions: []string{"create"}},
			{Address: "terraform_data.secret", Actions: []string{"create"}},
		}}},
		{"update_replace_sensitive.json", PlanSummary{Add: 1, Change: 2, Destroy: 1, Replace: 1, Resources: []ResourceChange{
			{Address: "terraform_data.greeting", Actions: []string{"update"}},
			{Address: "terraform_data.pinned", Actions: []string{"delete", "create"}},
			{Address: "terraform_data.secret", Actions: []string{"update"}},
		}}},
		{"destroy.json", PlanSummary{Destroy: 3, Resources: []ResourceChange{
			{Address: "terraform_data.greeting", Actions: []string{"delete"}},
			{Address: "terraform_data.pinned", Actions: []string{"delete"}},
			{Address: "terraform_data.secret", Actions: []string{"delete"}},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := summarize(loadPlan(t, tt.file))
			assert.Equal(t, tt.want, got)
			b, err := json.Marshal(got)
			require.NoError(t, err)
			assert.NotContains(t, string(b), fakeSecret)
			assert.NotContains(t, string(b), "hello")
		})
	}
}

func TestDrift(t *testing.T) {
	p := loadPlan(t, "update_replace_sensitive.json")
	got := drift(p, plandiff.Build(p))
	assert.Equal(t, &DriftDetails{Resources: []DriftedResource{
		// output is known only after apply, so only input is compared by
		// name; the changes say both, with values
		{Address: "terraform_data.greeting", Action: "update", Attributes: []string{"input"}, Changes: []plandiff.Attribute{
			{Path: "input", Action: "change", Old: "hello", New: "bonjour"},
			{Path: "output", Action: "change", Old: "hello", Unknown: true},
		}},
		// id and output are unknown; input is unchanged
		{Address: "terraform_data.pinned", Action: "replace", Attributes: []string{"triggers_replace"}, Changes: []plandiff.Attribute{
			{Path: "id", Action: "change", Old: "26baf04a-69a0-5156-0403-06e1aa820d4f", Unknown: true},
			{Path: "output", Action: "change", Old: "pinned", Unknown: true},
			{Path: "triggers_replace[0]", Action: "remove", Old: "hello", ForcesReplacement: true},
			{Path: "triggers_replace[0]", Action: "add", New: "bonjour", ForcesReplacement: true},
		}},
		// the changed input is sensitive: flagged, not named, no values;
		// output echoes the secret unmarked and is redacted too
		{Address: "terraform_data.secret", Action: "update", SensitiveChanged: true, Changes: []plandiff.Attribute{
			{Path: "input", Action: "change", Sensitive: true},
			{Path: "output", Action: "change", Sensitive: true, Unknown: true},
		}},
	}}, got)
	b, err := json.Marshal(got)
	require.NoError(t, err)
	assert.NotContains(t, string(b), fakeSecret)

	p = loadPlan(t, "destroy.json")
	got = drift(p, plandiff.Build(p))
	require.Len(t, got.Resources, 3)
	assert.Equal(t, DriftedResource{Address: "terraform_data.greeting", Action: "delete"}, got.Resources[0])
}

func TestChangedAttributesNested(t *testing.T) {
	c := &tfjson.Change{
		Actions:         tfjson.Actions{tfjson.ActionUpdate},
		Before:          map[string]any{"tags": map[string]any{"Name": "a"}, "cidr": "10.0.0.0/16", "rules": []any{"x"}, "arn": "arn:1", "password": "p1"},
		After:           map[string]any{"tags": map[string]any{"Name": "b"}, "cidr": "10.0.0.0/16", "rules": []any{"x", "y"}, "password": "p2"},
		AfterUnknown:    map[string]any{"arn": true, "rules": []any{false, false}},
		BeforeSensitive: map[string]any{"password": true},
		AfterSensitive:  map[string]any{"tags": map[string]any{}, "password": true},
	}
	names, sens := changedAttributes(c)
	assert.Equal(t, []string{"rules", "tags"}, names)
	assert.True(t, sens)
}

func TestPriorResources(t *testing.T) {
	tests := []struct {
		file       string
		prior      int
		afterApply int
	}{
		{"create.json", 0, 3},
		{"update_replace_sensitive.json", 3, 3},
		{"destroy.json", 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p := loadPlan(t, tt.file)
			res := PlanResult{Summary: summarize(p), PriorResources: priorResources(p)}
			assert.Equal(t, tt.prior, res.PriorResources)
			assert.Equal(t, tt.afterApply, res.StateResourcesAfter())
		})
	}
}
