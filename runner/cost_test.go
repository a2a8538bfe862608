package runner

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseInfracost(t *testing.T) {
	tests := []struct {
		file string
		want CostEstimate
	}{
		{"single_project.json", CostEstimate{
			Currency: "USD", TotalMonthlyCost: "1303.28", PastTotalMonthlyCost: "0", DiffTotalMonthlyCost: "1303.28",
			Projects: []ProjectCost{{
				Name:             "infracost/infracost/cmd/infracost/testdata/diff_with_infracost_json",
				TotalMonthlyCost: "1303.28", PastTotalMonthlyCost: "0", DiffTotalMonthlyCost: "1303.28",
			}},
		}},
		{"multi_project_with_error.json", CostEstimate{
			Currency: "USD", TotalMonthlyCost: "1204.96", PastTotalMonthlyCost: "1204.96", DiffTotalMonthlyCost: "0",
			Projects: []ProjectCost{
				{Name: "us1-dev", TotalMonthlyCost: "0", PastTotalMonthlyCost: "0", DiffTotalMonthlyCost: "0",
					Errors: []string{`Error loading Terraform modules: failed to parse file REPLACED_PROJECT_PATH/testdata/breakdown_multi_project_with_error_output_json/us1/mod_with_error.tf diag: REPLACED_PROJECT_PATH/testdata/breakdown_multi_project_with_error_output_json/us1/mod_with_error.tf:1,9-10: Invalid block definition; Either a quoted string block label or an opening brace ("{") is expected here., and 1 other diagnostic(s)`}},
				{Name: "us1-prod", TotalMonthlyCost: "0", PastTotalMonthlyCost: "0", DiffTotalMonthlyCost: "0",
					Errors: []string{`Error loading Terraform modules: failed to parse file REPLACED_PROJECT_PATH/testdata/breakdown_multi_project_with_error_output_json/us1/mod_with_error.tf diag: REPLACED_PROJECT_PATH/testdata/breakdown_multi_project_with_error_output_json/us1/mod_with_error.tf:1,9-10: Invalid block definition; Either a quoted string block label or an opening brace ("{") is expected here., and 1 other diagnostic(s)`}},
				{Name: "us2-dev", TotalMonthlyCost: "462.32", PastTotalMonthlyCost: "462.32", DiffTotalMonthlyCost: "0"},
				{Name: "us2-prod", TotalMonthlyCost: "742.64", PastTotalMonthlyCost: "742.64", DiffTotalMonthlyCost: "0"},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "infracost", tt.file))
			require.NoError(t, err)
			got, err := ParseInfracost(b)
			require.NoError(t, err)
			assert.Equal(t, tt.want, *got)
		})
	}
}

func TestParseInfracostRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":       "Error: no API key",
		"terraform plan": `{"format_version":"1.2","resource_changes":[]}`,
		"future schema":  `{"version":"1.0","projects":[]}`,
		"truncated":      `{"version":"0.2","projects":[`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseInfracost([]byte(in))
			require.Error(t, err)
		})
	}
}

func TestCostSkipped(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin) // an empty directory: no infracost (not installed here anyway)
	tests := []struct {
		name    string
		enabled bool
		want    string
	}{
		{"disabled", false, "cost estimate skipped: Infracost is not enabled"},
		{"enabled but not on PATH", true, "cost estimate skipped: infracost not on PATH (install it, or turn the cost estimate off)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runner{cfg: Config{Infracost: tt.enabled}}
			var lines []string
			est, err := r.Cost(context.Background(), Job{Dir: t.TempDir(), Agent: func(m string) { lines = append(lines, m) }}, "grape.tfplan", nil)
			require.NoError(t, err)
			assert.Nil(t, est)
			assert.Equal(t, []string{tt.want}, lines)
		})
	}
}
