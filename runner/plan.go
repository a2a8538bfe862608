package runner

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"sort"
	"time"

	"github.com/hashicorp/terraform-exec/tfexec"
	tfjson "github.com/hashicorp/terraform-json"

	"github.com/grapehq/grape/internal/errkind"
	"github.com/grapehq/grape/plandiff"
)

// DefaultPlanFile is where Plan saves the plan, relative to the run directory.
const DefaultPlanFile = "grape.tfplan"

// PlanOptions selects the kind of plan.
type PlanOptions struct {
	// Destroy plans the destruction of everything in the state (-destroy).
	Destroy bool
	// DetailedExitCode marks a drift check: the plan's exit code decides
	// Changes (terraform always runs with -detailed-exitcode here) and the
	// result carries Drift details.
	DetailedExitCode bool
	// PlanFile is where the plan is saved; relative paths are inside the
	// run directory. Default DefaultPlanFile.
	PlanFile string
	// NoDiff leaves the attribute-level diff out of the log and shows
	// terraform's one line per resource instead (benchmarks compare both).
	NoDiff bool
}

// PlanResult is what a successful plan produced.
type PlanResult struct {
	// Changes is true when applying the plan would change something
	// (terraform's exit code 2 under -detailed-exitcode).
	Changes bool
	// PlanFile is the absolute path of the saved plan: pass it to Apply.
	PlanFile string
	Summary  PlanSummary
	// Drift is set for drift checks (PlanOptions.DetailedExitCode) that
	// found changes.
	Drift *DriftDetails
	// Plan is the saved plan as `terraform show -json` read it. It holds
	// sensitive values in plain text: never store or log it; Diff is the
	// redacted form.
	Plan *tfjson.Plan
	// PlanJSON is Plan encoded again (for checks that read plan JSON, such
	// as policies and infracost), so no second `terraform show` is needed.
	// Same rules as Plan.
	PlanJSON []byte
	// Diff is the plan's attribute-level changes without sensitive values,
	// for the deployment row.
	Diff *plandiff.Diff
	// PriorResources is how many managed resources the state held when
	// terraform planned (the plan's prior_state): 0 for an empty or missing
	// state. The agent compares it with what it knows it applied.
	PriorResources int
}

// StateResourcesAfter is how many managed resources the state holds once
// this plan is applied: the prior state plus creations minus deletions (a
// replacement is both).
func (p PlanResult) StateResourcesAfter() int {
	n := p.PriorResources + p.Summary.Add - p.Summary.Destroy
	if n < 0 {
		return 0
	}
	return n
}

// PlanSummary is stored on the deployment (jsonb) so reviewers need not read
// logs. It holds resource addresses and actions, never attribute values.
// Counts follow terraform's "Plan: X to add, Y to change, Z to destroy." line:
// a replacement counts in Add and in Destroy, and once more in Replace.
type PlanSummary struct {
	Add       int              `json:"add"`
	Change    int              `json:"change"`
	Destroy   int              `json:"destroy"`
	Replace   int              `json:"replace"`
	Import    int              `json:"import,omitempty"`
	Forget    int              `json:"forget,omitempty"`
	Resources []ResourceChange `json:"resources"`
}

// ResourceChange is one resource instance the plan changes.
type ResourceChange struct {
	Address string   `json:"address"`
	Actions []string `json:"actions"` // terraform's: ["create"], ["update"], ["delete","create"], …
	Deposed string   `json:"deposed,omitempty"`
	Import  bool     `json:"import,omitempty"`
}

// DriftDetails says what a drift check would change to bring the
// infrastructure back to the committed configuration.
type DriftDetails struct {
	Resources []DriftedResource `json:"resources"`
}

// DriftedResource is one resource a drift plan would change.
type DriftedResource struct {
	Address string `json:"address"`
	// Action is create, update, replace, delete (or forget).
	Action string `json:"action"`
	// Attributes are the top-level attribute names whose planned value
	// differs from the current one (update and replace only). Attributes
	// marked sensitive and values known only after apply are left out.
	Attributes []string `json:"attributes,omitempty"`
	// SensitiveChanged is true when a sensitive attribute differs too; its
	// name is not recorded.
	SensitiveChanged bool `json:"sensitive_changed,omitempty"`
	// Changes are the changed values with old -> new, leaf by leaf, from
	// the plan diff: sensitive ones carry no value, unknown ones no new one.
	Changes []plandiff.Attribute `json:"changes,omitempty"`
}

// Plan runs terraform plan -out and reads the saved plan back with
// terraform show -json for the summary and the diff — except for a drift
// check whose exit code says nothing changed. The diff is written to the log
// in place of terraform's one line per resource, before the summary line. On
// failure the plan file is removed, so nothing half-planned can be applied.
func (r *Runner) Plan(ctx context.Context, j Job, o PlanOptions) (PlanResult, error) {
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return PlanResult{}, &Error{Kind: errkind.Plan, Phase: "plan", Msg: err.Error(), Err: err}
	}
	j.Dir = dir
	planFile := o.PlanFile
	if planFile == "" {
		planFile = DefaultPlanFile
	}
	planFile = inDir(dir, planFile)
	destroy := ""
	if o.Destroy {
		destroy = " -destroy"
	}
	s.agentf("terraform plan%s -out=%s", destroy, relTo(dir, planFile))

	js := s.jsonStream()
	js.hold = !o.NoDiff
	stderr := s.rawWriter(s.stderr)
	var res PlanResult
	err = r.run(ctx, j, s, "plan", r.t.Plan, func(ctx context.Context, tf *tfexec.Terraform) error {
		tf.SetStderr(stderr)
		opts := []tfexec.PlanOption{tfexec.Out(planFile), tfexec.Destroy(o.Destroy), tfexec.Refresh(true)}
		for _, vf := range j.VarFiles {
			opts = append(opts, tfexec.VarFile(inDir(dir, vf)))
		}
		started := time.Now()
		changes, err := tf.PlanJSON(ctx, js, opts...)
		if err != nil {
			return err
		}
		r.log.Debug("terraform command finished", "command", "plan", "dir", dir, "duration", time.Since(started))
		// PlanJSON left the stream attached as stdout; show -json must not
		// be rendered into the log (it holds values).
		tf.SetStdout(nil)
		if o.DetailedExitCode && !changes {
			// A drift check in sync: exit code 0 under -detailed-exitcode
			// means no resource or output changes, so there is nothing for
			// show -json to summarise. It would load every provider's schema
			// again (~3 s for AWS), the largest cost of a drift check after
			// the plan itself. Deployments keep it: cost and policies read
			// the plan JSON even when it is empty.
			none := &tfjson.Plan{}
			res = PlanResult{PlanFile: planFile, Summary: PlanSummary{Resources: []ResourceChange{}}, Diff: plandiff.Build(none)}
			if js.hold {
				js.Flush()
				js.release(plandiff.Lines(none), true)
			}
			return nil
		}
		started = time.Now()
		plan, err := tf.ShowPlanFile(ctx, planFile)
		r.log.Debug("terraform command finished", "command", "show", "dir", dir, "duration", time.Since(started))
		if err != nil {
			return &Error{Kind: errkind.Plan, Phase: "plan", Msg: "terraform show -json could not read the saved plan; see the log", Err: err}
		}
		raw, err := json.Marshal(plan)
		if err != nil {
			return &Error{Kind: errkind.Plan, Phase: "plan", Msg: "encoding the saved plan as JSON failed", Err: err}
		}
		diff := plandiff.Build(plan)
		res = PlanResult{Changes: changes, PlanFile: planFile, Summary: summarize(plan), Plan: plan, PlanJSON: raw, Diff: diff, PriorResources: priorResources(plan)}
		if o.DetailedExitCode && changes {
			res.Drift = drift(plan, diff)
		}
		if js.hold {
			js.Flush()
			js.release(plandiff.Lines(plan), diff.Empty())
		}
		return nil
	})
	js.Flush()
	js.release(nil, false) // plan failed: what was held goes out as terraform said it
	stderr.Flush()
	if err != nil {
		_ = os.Remove(planFile)
		err = finish("plan", err, js)
		r.dropInit(s, j, err)
		return PlanResult{}, err
	}
	return res, nil
}

// dropInit forgets the kept .terraform after a failed plan: if that copy
// was what failed (a provider link gone stale, a backend moved), keeping it
// would fail every later run the same way. The next run inits in full.
func (r *Runner) dropInit(s *sink, j Job, err error) {
	var e *Error
	if j.InitCache == "" || (errors.As(err, &e) && (e.Kind == errkind.Cancelled || e.Kind == errkind.Timeout)) {
		return
	}
	if _, serr := os.Stat(j.InitCache); serr != nil {
		return
	}
	if ferr := ForgetInit(j.InitCache); ferr != nil {
		r.log.Warn("dropping the init cache after a failed plan", "err", ferr)
		return
	}
	s.agentf("init: the kept .terraform is dropped after this failed plan; the next run runs a full terraform init")
}

// priorResources counts the managed resource instances of the state the plan
// started from; data sources are read again on every plan and do not count.
func priorResources(p *tfjson.Plan) int {
	if p.PriorState == nil || p.PriorState.Values == nil {
		return 0
	}
	var count func(m *tfjson.StateModule) int
	count = func(m *tfjson.StateModule) int {
		if m == nil {
			return 0
		}
		n := 0
		for _, r := range m.Resources {
			if r.Mode == tfjson.ManagedResourceMode {
				n++
			}
		}
		for _, c := range m.ChildModules {
			n += count(c)
		}
		return n
	}
	return count(p.PriorState.Values.RootModule)
}

// summarize counts a plan's resource changes the way terraform's summary
// line does and lists every resource that changes.
func summarize(p *tfjson.Plan) PlanSummary {
	sum := PlanSummary{Resources: []ResourceChange{}}
	for _, rc := range p.ResourceChanges {
		if rc.Change == nil {
			continue
		}
		a := rc.Change.Actions
		importing := rc.Change.Importing != nil
		if (a.NoOp() && !importing) || a.Read() {
			continue
		}
		switch {
		case a.Create():
			sum.Add++
		case a.Update():
			sum.Change++
		case a.Delete():
			sum.Destroy++
		case a.Replace():
			sum.Add++
			sum.Destroy++
			sum.Replace++
		case a.Forget():
			sum.Forget++
		}
		if importing {
			sum.Import++
		}
		actions := make([]string, len(a))
		for i, x := range a {
			actions[i] = string(x)
		}
		sum.Resources = append(sum.Resources, ResourceChange{Address: rc.Address, Actions: actions, Deposed: rc.DeposedKey, Import: importing})
	}
	return sum
}

// drift lists what a drift plan would change, with attribute names and the
// diff's non-sensitive old -> new values.
func drift(p *tfjson.Plan, diff *plandiff.Diff) *DriftDetails {
	byAddr := map[string][]plandiff.Attribute{}
	for _, r := range diff.Resources {
		byAddr[r.Address] = r.Attributes
	}
	d := &DriftDetails{Resources: []DriftedResource{}}
	for _, rc := range p.ResourceChanges {
		if rc.Change == nil {
			continue
		}
		a := rc.Change.Actions
		var action string
		switch {
		case a.NoOp(), a.Read():
			continue
		case a.Create():
			action = "create"
		case a.Update():
			action = "update"
		case a.Replace():
			action = "replace"
		case a.Delete():
			action = "delete"
		case a.Forget():
			action = "forget"
		default:
			continue
		}
		dr := DriftedResource{Address: rc.Address, Action: action}
		if action == "update" || action == "replace" {
			dr.Attributes, dr.SensitiveChanged = changedAttributes(rc.Change)
			dr.Changes = byAddr[rc.Address]
		}
		d.Resources = append(d.Resources, dr)
	}
	return d
}

// changedAttributes compares the before and after objects of a change key by
// key (top level only).
func changedAttributes(c *tfjson.Change) (names []string, sensitiveChanged bool) {
	before, _ := c.Before.(map[string]any)
	after, _ := c.After.(map[string]any)
	unknown, _ := c.AfterUnknown.(map[string]any)
	bSens, _ := c.BeforeSensitive.(map[string]any)
	aSens, _ := c.AfterSensitive.(map[string]any)
	keys := map[string]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	for k := range keys {
		if anyTrue(unknown[k]) {
			continue // known only after apply: nothing to compare
		}
		if reflect.DeepEqual(before[k], after[k]) {
			continue
		}
		if anyTrue(bSens[k]) || anyTrue(aSens[k]) {
			sensitiveChanged = true
			continue
		}
		names = append(names, k)
	}
	sort.Strings(names)
	return names, sensitiveChanged
}

// anyTrue reports whether a terraform "unknown"/"sensitive" marker value
// (true, or a nested object/list of markers) marks anything.
func anyTrue(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case map[string]any:
		for _, e := range x {
			if anyTrue(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if anyTrue(e) {
				return true
			}
		}
	}
	return false
}
