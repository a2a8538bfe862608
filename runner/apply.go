package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/terraform-exec/tfexec"
	tfjson "github.com/hashicorp/terraform-json"

	"github.com/grapehq/grape/internal/errkind"
)

// Apply applies exactly the saved plan file (never a fresh plan): what was
// reviewed is what runs, and terraform refuses the file if the state moved
// on since it was planned.
func (r *Runner) Apply(ctx context.Context, j Job, planFile string) error {
	_, err := r.apply(ctx, j, planFile)
	return err
}

// ApplyResult is what a successful apply left to record.
type ApplyResult struct {
	// Outputs are the root module outputs after the apply, sensitive
	// values replaced by "(sensitive)" (as Outputs returns them).
	Outputs map[string]Output
	// OutputsErr says why the outputs could not be read; the apply itself
	// succeeded.
	OutputsErr error
}

// ApplyOutputs is Apply followed by Outputs, without the second terraform
// process when it can: terraform ends `apply -json` with an "outputs"
// message that carries every root module output (name, type, sensitivity,
// the value unless sensitive), which is all Outputs stores. An engine that
// sends no such message gets `terraform output -json` as before.
func (r *Runner) ApplyOutputs(ctx context.Context, j Job, planFile string) (ApplyResult, error) {
	outs, err := r.apply(ctx, j, planFile)
	if err != nil {
		return ApplyResult{}, err
	}
	if outs != nil {
		newSink(j).agentf("outputs: %d, as terraform apply reported them (no separate terraform output)", len(outs))
		return ApplyResult{Outputs: outs}, nil
	}
	outs, err = r.Outputs(ctx, j)
	return ApplyResult{Outputs: outs, OutputsErr: err}, nil
}

// apply runs terraform apply of the saved plan and returns the outputs its
// -json stream reported (nil if it reported none).
func (r *Runner) apply(ctx context.Context, j Job, planFile string) (map[string]Output, error) {
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return nil, &Error{Kind: errkind.Apply, Phase: "apply", Msg: err.Error(), Err: err}
	}
	j.Dir = dir
	if planFile == "" {
		err := errors.New("no plan file given")
		return nil, &Error{Kind: errkind.Apply, Phase: "apply", Msg: "no plan file given: only a saved plan is ever applied", Err: err}
	}
	planFile = inDir(dir, planFile)
	if _, err := os.Stat(planFile); err != nil {
		return nil, &Error{Kind: errkind.Apply, Phase: "apply", Msg: fmt.Sprintf("saved plan %s is missing, so there is nothing approved to apply", relTo(dir, planFile)), Err: err}
	}
	s.agentf("terraform apply %s", relTo(dir, planFile))

	js := s.jsonStream()
	stderr := s.rawWriter(s.stderr)
	err = r.run(ctx, j, s, "apply", r.t.Apply, func(ctx context.Context, tf *tfexec.Terraform) error {
		tf.SetStderr(stderr)
		return tf.ApplyJSON(ctx, js, tfexec.DirOrPlan(planFile))
	})
	js.Flush()
	stderr.Flush()
	var e *Error
	if errors.As(err, &e) && (e.Kind == errkind.Cancelled || e.Kind == errkind.Timeout) && js.applied && !hasErrors(js.diags) {
		// The context ended in the moment between terraform finishing the
		// apply and exiting: the infrastructure did change, so reporting a
		// cancellation would be false.
		s.agentf("%s arrived after terraform had finished applying; the apply is complete", e.Err)
		return js.outputs, nil
	}
	if err := finish("apply", err, js); err != nil {
		return nil, err
	}
	return js.outputs, nil
}

func hasErrors(diags []tfjson.Diagnostic) bool {
	for _, d := range diags {
		if d.Severity == tfjson.DiagnosticSeverityError {
			return true
		}
	}
	return false
}

// Output is one root module output as stored on the deployment.
type Output struct {
	Sensitive bool            `json:"sensitive"`
	Type      json.RawMessage `json:"type,omitempty"`
	// Value is the output's JSON value, or the JSON string "(sensitive)".
	Value json.RawMessage `json:"value"`
}

// Redacted is the value stored for sensitive outputs.
const Redacted = "(sensitive)"

var redactedJSON = json.RawMessage(`"` + Redacted + `"`)

// Outputs reads the root module outputs (terraform output -json) with
// sensitive values replaced by "(sensitive)".
func (r *Runner) Outputs(ctx context.Context, j Job) (map[string]Output, error) {
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return nil, &Error{Kind: errkind.Internal, Phase: "outputs", Msg: err.Error(), Err: err}
	}
	j.Dir = dir
	s.agentf("terraform output -json")
	stderr := s.rawWriter(s.stderr)
	var out map[string]Output
	err = r.run(ctx, j, s, "outputs", r.t.Outputs, func(ctx context.Context, tf *tfexec.Terraform) error {
		// No stdout writer: terraform-exec would copy the raw values to it.
		tf.SetStderr(stderr)
		metas, err := tf.Output(ctx)
		if err != nil {
			return &Error{Kind: errkind.Internal, Phase: "outputs", Msg: "terraform output -json failed; see the log", Err: err}
		}
		out = redactOutputs(metas)
		return nil
	})
	stderr.Flush()
	if err != nil {
		return nil, finish("outputs", err, &jsonStream{})
	}
	return out, nil
}

// redactOutputMessage fills in "(sensitive)" where apply's outputs message
// left a sensitive value out, so both ways of reading outputs store the same.
func redactOutputMessage(outs map[string]Output) map[string]Output {
	for name, o := range outs {
		switch {
		case o.Sensitive:
			o.Value = redactedJSON // whatever terraform sent
		case o.Value == nil:
			o.Value = json.RawMessage("null")
		}
		outs[name] = o
	}
	return outs
}

func redactOutputs(metas map[string]tfexec.OutputMeta) map[string]Output {
	out := make(map[string]Output, len(metas))
	for name, m := range metas {
		o := Output{Sensitive: m.Sensitive, Type: m.Type, Value: m.Value}
		if m.Sensitive {
			o.Value = redactedJSON
		}
		out[name] = o
	}
	return out
}
