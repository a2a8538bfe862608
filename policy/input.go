package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
)

// Meta is input.grape: what the agent knows of the deployment whose plan is
// judged.
type Meta struct {
	DeploymentID  string `json:"deployment_id,omitempty"`
	Cluster       string `json:"cluster"`
	Config        string `json:"config"`
	ConfigVersion int    `json:"config_version,omitempty"`
	// Action is plan, apply or destroy.
	Action string `json:"action"`
	// Intent is the config's intent (a JSON object) as rendered.
	Intent           json.RawMessage `json:"intent,omitempty"`
	RequestedBy      string          `json:"requested_by"`
	TemplatesVersion string          `json:"templates_version,omitempty"`
	TemplatesDigest  string          `json:"templates_digest,omitempty"`
	PolicySet        string          `json:"policy_set,omitempty"`
}

// buildInput decodes the plan into OPA's values, adds input.grape and
// collects the plan's sensitive strings, to be masked in messages.
func buildInput(plan []byte, meta Meta) (ast.Value, []string, error) {
	v, err := decodeValue(plan)
	if err != nil {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: "the plan is not valid JSON (want the output of terraform show -json): " + err.Error(), Err: err}
	}
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: "the plan is not a JSON object (want the output of terraform show -json)"}
	}
	secrets := sensitiveStrings(obj)
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: fmt.Sprintf("input.grape: the intent is not valid JSON: %v", err), Err: err}
	}
	grape, err := decodeValue(mb)
	if err != nil {
		return nil, nil, &EvalError{Reason: ReasonInput, Msg: fmt.Sprintf("input.grape: %v", err), Err: err}
	}
	obj.Insert(ast.InternedTerm("grape"), ast.NewTerm(grape))
	return obj, secrets, nil
}

// decodeValue reads one JSON document straight into OPA's values. Going
// through Go maps first (encoding/json, then ast.InterfaceToValue) costs
// twice as much, and a plan of a thousand resources is megabytes.
// Duplicate object keys and invalid UTF-8 are errors.
func decodeValue(b []byte) (ast.Value, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	v, err := decodeNext(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func decodeNext(dec *jsontext.Decoder) (ast.Value, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case 'n':
		return ast.NullValue, nil
	case 't':
		return ast.Boolean(true), nil
	case 'f':
		return ast.Boolean(false), nil
	case '"':
		return ast.String(tok.String()), nil
	case '0':
		return ast.Number(tok.String()), nil // the literal, as json.Number keeps it
	case '[':
		var terms []*ast.Term
		for dec.PeekKind() != ']' {
			v, err := decodeNext(dec)
			if err != nil {
				return nil, err
			}
			terms = append(terms, ast.NewTerm(v))
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		return ast.NewArray(terms...), nil
	case '{':
		var pairs [][2]*ast.Term
		for dec.PeekKind() != '}' {
			name, err := dec.ReadToken()
			if err != nil {
				return nil, err
			}
			key := ast.StringTerm(name.String()) // before the next read voids the token
			v, err := decodeNext(dec)
			if err != nil {
				return nil, err
			}
			pairs = append(pairs, [2]*ast.Term{key, ast.NewTerm(v)})
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		return ast.NewObject(pairs...), nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok.Kind())
}

// sensitiveStrings returns the plan's values terraform marks sensitive:
// resource attributes under before_sensitive/after_sensitive (of changes and
// of drift), sensitive output changes, and the values of variables the root
// module declares sensitive.
func sensitiveStrings(plan ast.Object) []string {
	var out []string
	for _, list := range []string{"resource_changes", "resource_drift"} {
		eachArray(get(plan, list), func(rc ast.Value) {
			change := get(rc, "change")
			collectMasked(get(change, "before"), get(change, "before_sensitive"), &out)
			collectMasked(get(change, "after"), get(change, "after_sensitive"), &out)
		})
	}
	if oc, ok := get(plan, "output_changes").(ast.Object); ok {
		oc.Foreach(func(_, change *ast.Term) {
			collectMasked(get(change.Value, "before"), get(change.Value, "before_sensitive"), &out)
			collectMasked(get(change.Value, "after"), get(change.Value, "after_sensitive"), &out)
		})
	}
	vars := get(plan, "variables")
	if decls, ok := get(get(get(plan, "configuration"), "root_module"), "variables").(ast.Object); ok {
		decls.Foreach(func(name, decl *ast.Term) {
			if get(decl.Value, "sensitive") == ast.Boolean(true) {
				collectAll(get(get(vars, string(name.Value.(ast.String))), "value"), &out)
			}
		})
	}
	return out
}

// collectMasked adds the strings of v where mask — terraform's sensitivity
// mirror: true, or an object or array of the value's shape — says sensitive.
func collectMasked(v, mask ast.Value, out *[]string) {
	switch m := mask.(type) {
	case ast.Boolean:
		if m {
			collectAll(v, out)
		}
	case ast.Object:
		m.Foreach(func(k, sub *ast.Term) {
			if name, ok := k.Value.(ast.String); ok {
				collectMasked(get(v, string(name)), sub.Value, out)
			}
		})
	case *ast.Array:
		vl, _ := v.(*ast.Array)
		for i := 0; i < m.Len() && vl != nil && i < vl.Len(); i++ {
			collectMasked(vl.Elem(i).Value, m.Elem(i).Value, out)
		}
	}
}

func collectAll(v ast.Value, out *[]string) {
	switch x := v.(type) {
	case ast.String:
		*out = append(*out, string(x))
	case ast.Number:
		*out = append(*out, string(x))
	case ast.Object:
		x.Foreach(func(_, sub *ast.Term) { collectAll(sub.Value, out) })
	case *ast.Array:
		x.Foreach(func(sub *ast.Term) { collectAll(sub.Value, out) })
	}
}

// get is v[key] for an object v, else nil.
func get(v ast.Value, key string) ast.Value {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil
	}
	t := obj.Get(ast.StringTerm(key))
	if t == nil {
		return nil
	}
	return t.Value
}

func eachArray(v ast.Value, f func(ast.Value)) {
	if a, ok := v.(*ast.Array); ok {
		a.Foreach(func(t *ast.Term) { f(t.Value) })
	}
}

// asList reads a query binding (Go values) as a list.
func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
