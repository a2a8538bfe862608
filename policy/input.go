package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Meta is input.grape: what the agent knows of the deployment whose plan is
// judged.
type Meta struct {
	DeploymentID  string `json:"deployment_id,omitempty"`
	Cluster       string `json:"cluster"`
	Config        string `json:"config"`
	ConfigVersion int    `json:"config_version,omitempty"`
	// Action is plan, apply, destroy (or drift for a remediation's check).
	Action string `json:"action"`
	// Intent is the config's intent (JSON object) as rendered.
	Intent           json.RawMessage `json:"intent,omitempty"`
	RequestedBy      string          `json:"requested_by"`
	TemplatesVersion string          `json:"templates_version,omitempty"`
	TemplatesDigest  string          `json:"templates_digest,omitempty"`
	PolicySet        string          `json:"policy_set,omitempty"`
}

// buildInput decodes the plan, adds input.grape and collects the plan's
// sensitive strings, to be masked in messages.
func buildInput(plan []byte, meta Meta) (ast.Value, []string, error) {
	doc, err := decodeJSON(plan)
	if err != nil {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: "the plan is not valid JSON (want the output of terraform show -json): " + err.Error(), Err: err}
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: "the plan is not a JSON object (want the output of terraform show -json)"}
	}
	secrets := sensitiveStrings(obj)
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: fmt.Sprintf("encoding input.grape: %v", err), Err: err}
	}
	grape, err := decodeJSON(mb)
	if err != nil {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: fmt.Sprintf("input.grape: the intent is not valid JSON: %v", err), Err: err}
	}
	obj["grape"] = grape
	v, err := ast.InterfaceToValue(obj)
	if err != nil {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: fmt.Sprintf("converting the plan for the policy engine: %v", err), Err: err}
	}
	return v, secrets, nil
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

// sensitiveStrings returns the plan's values terraform marks sensitive:
// resource attributes under before_sensitive/after_sensitive, sensitive
// output changes, and variables the root module declares sensitive.
func sensitiveStrings(plan map[string]any) []string {
	var out []string
	for _, rc := range asList(plan["resource_changes"]) {
		change, _ := asMap(rc)["change"].(map[string]any)
		collectMasked(change["before"], change["before_sensitive"], &out)
		collectMasked(change["after"], change["after_sensitive"], &out)
	}
	for _, rc := range asList(plan["resource_drift"]) {
		change, _ := asMap(rc)["change"].(map[string]any)
		collectMasked(change["before"], change["before_sensitive"], &out)
		collectMasked(change["after"], change["after_sensitive"], &out)
	}
	for _, oc := range asMap(plan["output_changes"]) {
		change := asMap(oc)
		collectMasked(change["before"], change["before_sensitive"], &out)
		collectMasked(change["after"], change["after_sensitive"], &out)
	}
	root := asMap(asMap(plan["configuration"])["root_module"])
	vars := asMap(plan["variables"])
	for name, decl := range asMap(root["variables"]) {
		if sensitive, _ := asMap(decl)["sensitive"].(bool); sensitive {
			collectAll(asMap(vars[name])["value"], &out)
		}
	}
	return out
}

// collectMasked adds the strings of v where mask (terraform's sensitivity
// mirror: true, or an object/array of the value's shape) says sensitive.
func collectMasked(v, mask any, out *[]string) {
	switch m := mask.(type) {
	case bool:
		if m {
			collectAll(v, out)
		}
	case map[string]any:
		vm := asMap(v)
		for k, sub := range m {
			collectMasked(vm[k], sub, out)
		}
	case []any:
		vl := asList(v)
		for i, sub := range m {
			if i < len(vl) {
				collectMasked(vl[i], sub, out)
			}
		}
	}
}

func collectAll(v any, out *[]string) {
	switch x := v.(type) {
	case string:
		*out = append(*out, x)
	case json.Number:
		*out = append(*out, x.String())
	case map[string]any:
		for _, sub := range x {
			collectAll(sub, out)
		}
	case []any:
		for _, sub := range x {
			collectAll(sub, out)
		}
	}
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
