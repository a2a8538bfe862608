package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-exec/tfexec"

	"github.com/grapehq/grape/internal/errkind"
)

// CostEstimate is the part of an Infracost breakdown stored on the
// deployment. Amounts are Infracost's decimal strings, unrounded; "" means
// Infracost reported no figure.
type CostEstimate struct {
	Currency             string        `json:"currency"`
	TotalMonthlyCost     string        `json:"total_monthly_cost"`
	PastTotalMonthlyCost string        `json:"past_total_monthly_cost"`
	DiffTotalMonthlyCost string        `json:"diff_total_monthly_cost"`
	Projects             []ProjectCost `json:"projects"`
}

// ProjectCost is one Infracost project (one per plan file here).
type ProjectCost struct {
	Name                 string   `json:"name"`
	TotalMonthlyCost     string   `json:"total_monthly_cost"`
	PastTotalMonthlyCost string   `json:"past_total_monthly_cost"`
	DiffTotalMonthlyCost string   `json:"diff_total_monthly_cost"`
	Errors               []string `json:"errors,omitempty"`
}

// infracostOutput is the subset of `infracost breakdown --format json`
// (schema version 0.2) that CostEstimate needs.
type infracostOutput struct {
	Version              *string `json:"version"`
	Currency             string  `json:"currency"`
	TotalMonthlyCost     *string `json:"totalMonthlyCost"`
	PastTotalMonthlyCost *string `json:"pastTotalMonthlyCost"`
	DiffTotalMonthlyCost *string `json:"diffTotalMonthlyCost"`
	Projects             []struct {
		Name        string `json:"name"`
		DisplayName string `json:"displayName"`
		Metadata    struct {
			Errors []struct {
				Message string `json:"message"`
			} `json:"errors"`
		} `json:"metadata"`
		PastBreakdown *infracostBreakdown `json:"pastBreakdown"`
		Breakdown     *infracostBreakdown `json:"breakdown"`
		Diff          *infracostBreakdown `json:"diff"`
	} `json:"projects"`
}

type infracostBreakdown struct {
	TotalMonthlyCost *string `json:"totalMonthlyCost"`
}

func (b *infracostBreakdown) monthly() string {
	if b == nil {
		return ""
	}
	return str(b.TotalMonthlyCost)
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// ParseInfracost reads the output of `infracost breakdown --format json`.
func ParseInfracost(b []byte) (*CostEstimate, error) {
	var out infracostOutput
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("parsing infracost JSON: %w", err)
	}
	if out.Version == nil || out.Projects == nil {
		return nil, errors.New("parsing infracost JSON: no version or projects: not an infracost breakdown")
	}
	if v := *out.Version; !strings.HasPrefix(v, "0.") {
		return nil, fmt.Errorf("parsing infracost JSON: unsupported output version %q (want 0.x)", v)
	}
	est := &CostEstimate{
		Currency:             out.Currency,
		TotalMonthlyCost:     str(out.TotalMonthlyCost),
		PastTotalMonthlyCost: str(out.PastTotalMonthlyCost),
		DiffTotalMonthlyCost: str(out.DiffTotalMonthlyCost),
		Projects:             make([]ProjectCost, 0, len(out.Projects)),
	}
	for _, p := range out.Projects {
		pc := ProjectCost{
			Name:                 p.Name,
			TotalMonthlyCost:     p.Breakdown.monthly(),
			PastTotalMonthlyCost: p.PastBreakdown.monthly(),
			DiffTotalMonthlyCost: p.Diff.monthly(),
		}
		if p.DisplayName != "" {
			pc.Name = p.DisplayName
		}
		for _, e := range p.Metadata.Errors {
			pc.Errors = append(pc.Errors, e.Message)
		}
		est.Projects = append(est.Projects, pc)
	}
	return est, nil
}

// Cost estimates the monthly cost of a saved plan with Infracost: infracost
// breakdown on the plan's JSON — planJSON when the caller has it
// (PlanResult.PlanJSON), else terraform show -json of the plan. It never
// fails a deployment: when Infracost is disabled, missing or failing it
// writes one Agent line and returns nil. Only a cancellation of ctx is
// returned as an error, since the deployment is stopping anyway.
func (r *Runner) Cost(ctx context.Context, j Job, planFile string, planJSON []byte) (*CostEstimate, error) {
	s := newSink(j)
	if !r.cfg.Infracost {
		s.agentf("cost estimate skipped: Infracost is not enabled")
		return nil, nil
	}
	bin, err := exec.LookPath("infracost")
	if err != nil {
		s.agentf("cost estimate skipped: infracost not on PATH (install it, or turn the cost estimate off)")
		return nil, nil //nolint:nilerr // a cost estimate never fails a deployment (see above); the Agent line says why it is missing
	}
	dir, err := runDir(j.Dir)
	if err != nil {
		s.agentf("cost estimate skipped: %v", err)
		return nil, nil
	}
	j.Dir = dir
	if planFile == "" {
		planFile = DefaultPlanFile
	}
	planFile = inDir(dir, planFile)
	env, err := BuildEnv(EnvSpec{
		Environ:       r.environ,
		Allow:         append(append([]string(nil), r.cfg.EnvAllowlist...), "INFRACOST_*"), // its API key and settings
		Extra:         r.cfg.ExtraEnv,
		Job:           j.Env,
		CLIConfigFile: r.cliConfig,
	})
	if err != nil {
		s.agentf("cost estimate skipped: %v", err)
		return nil, nil
	}
	s.agentf("infracost breakdown --path <plan JSON> --format json")

	stderr := s.rawWriter(s.stderr)
	var est *CostEstimate
	err = r.run(ctx, j, s, "cost", r.t.Cost, func(ctx context.Context, tf *tfexec.Terraform) error {
		tf.SetStderr(stderr)
		if planJSON == nil {
			var shown bytes.Buffer
			tf.SetStdout(&shown) // the raw JSON; it holds values, so it goes to a private file only
			if _, err := tf.ShowPlanFile(ctx, planFile); err != nil {
				return fmt.Errorf("terraform show -json of the plan: %w", err)
			}
			planJSON = shown.Bytes()
		}
		f, err := os.CreateTemp(dir, ".grape-plan-*.json")
		if err != nil {
			return fmt.Errorf("writing plan JSON for infracost: %w", err)
		}
		defer os.Remove(f.Name())
		_, werr := f.Write(planJSON)
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("writing plan JSON for infracost: %w", err)
		}
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, "breakdown", "--path", f.Name(), "--format", "json", "--no-color")
		cmd.Dir = dir
		cmd.Env = envList(env)
		cmd.Stdout = &out
		cmd.Stderr = stderr
		// Its own group, like terraform, so the runner's watcher can kill
		// it and anything it starts.
		ownProcessGroup(cmd)
		cmd.WaitDelay = r.t.Grace
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("infracost breakdown: %w", err)
		}
		est, err = ParseInfracost(out.Bytes())
		return err
	})
	stderr.Flush()
	var e *Error
	if errors.As(err, &e) && e.Kind == errkind.Cancelled {
		return nil, e
	}
	if err != nil {
		s.agentf("cost estimate failed, going on without it: %v", err)
		return nil, nil
	}
	s.agentf("cost estimate: %s %s per month (%s vs. now)", est.TotalMonthlyCost, est.Currency, signed(est.DiffTotalMonthlyCost))
	return est, nil
}

func signed(d string) string {
	if d == "" || strings.HasPrefix(d, "-") {
		return d
	}
	return "+" + d
}

func envList(env map[string]string) []string {
	l := make([]string, 0, len(env))
	for k, v := range env {
		l = append(l, k+"="+v)
	}
	sort.Strings(l)
	return l
}
