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
	s := newSink(j)
	dir, err := runDir(j.Dir)
	if err != nil {
		return &Error{Kind: errkind.Apply, Phase: "apply", Msg: err.Error(), Err: err}
	}
	j.Dir = dir
	if planFile == "" {
		err := errors.New("no plan file given")
		return &Error{Kind: errkind.Apply, Phase: "apply", Msg: "no plan file given: only a saved plan is ever applied", Err: err}
	}
	planFile = inDir(dir, planFile)
	if _, err := os.Stat(planFile); err != nil {
		return &Error{Kind: errkind.Apply, Phase: "apply", Msg: fmt.Sprintf("saved plan %s is missing, so there is nothing approved to apply", relTo(dir, planFile)), Err: err}
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
		return nil
	}
	return finish("apply", err, js)
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
