package plandiff

import (
	"encoding/json"
	"sort"

	tfjson "github.com/hashicorp/terraform-json"
)

// Diff is a plan's changes as data, for the deployment row (jsonb) and
// `grape status --diff`. It holds no sensitive value.
type Diff struct {
	// Resources are the planned changes in plan order; no-ops are left out.
	Resources []Resource `json:"resources"`
	// Drift are the objects that changed outside terraform since the last
	// apply (terraform's resource_drift) and matter to this plan.
	Drift []Resource `json:"drift,omitempty"`
	// Outputs are the changed root outputs; Path is the output's name.
	Outputs []Attribute `json:"outputs,omitempty"`
}

// Empty reports whether the plan changes nothing.
func (d *Diff) Empty() bool { return d == nil || (len(d.Resources) == 0 && len(d.Outputs) == 0) }

// Resource is one resource instance's change.
type Resource struct {
	Address string `json:"address"`
	// Action: create, update, replace, delete, read, forget, import; for
	// drift: update (changed outside terraform) or delete (deleted outside).
	Action string `json:"action"`
	// Reason is terraform's action_reason, e.g. replace_because_tainted.
	Reason     string      `json:"reason,omitempty"`
	Deposed    string      `json:"deposed,omitempty"`
	Attributes []Attribute `json:"attributes"`
}

// Attribute is one changed leaf value.
type Attribute struct {
	// Path names the value: cidr_block, tags.team, ingress[0].from_port,
	// tags["kubernetes.io/role"].
	Path string `json:"path"`
	// Action: add, remove or change.
	Action string `json:"action"`
	// Old and New are the values (JSON scalars, or [] / {} for empty
	// collections); both null when Sensitive, New null when Unknown.
	Old any `json:"old"`
	New any `json:"new"`
	// Sensitive: the value is marked sensitive before or after; it was
	// compared but not copied.
	Sensitive bool `json:"sensitive,omitempty"`
	// Unknown: the new value is known only after apply.
	Unknown bool `json:"unknown,omitempty"`
	// ForcesReplacement: changing this value replaces the resource.
	ForcesReplacement bool `json:"forces_replacement,omitempty"`
}

// change is one resource change ready for both renderers.
type change struct {
	rc     *tfjson.ResourceChange
	action string
	root   *node
}

// Build returns the plan's changes as data.
func Build(p *tfjson.Plan) *Diff {
	d := &Diff{Resources: []Resource{}}
	if p == nil {
		return d
	}
	sec := planSecrets(p)
	for _, c := range planned(p, sec) {
		d.Resources = append(d.Resources, c.resource())
	}
	for _, c := range drifted(p, sec) {
		d.Drift = append(d.Drift, c.resource())
	}
	for _, oc := range outputs(p, sec) {
		d.Outputs = append(d.Outputs, leaves(oc.root, false)...)
	}
	return d
}

func (c change) resource() Resource {
	return Resource{
		Address:    c.rc.Address,
		Action:     c.action,
		Reason:     string(c.rc.ActionReason),
		Deposed:    c.rc.DeposedKey,
		Attributes: append([]Attribute{}, leaves(c.root, false)...),
	}
}

// leaves lists the changed leaf values under n. An empty collection that
// appears or disappears is a leaf too. forces: a value holding n forces
// replacement, so every change inside it does.
func leaves(n *node, forces bool) []Attribute {
	if n.op == opSame {
		return nil
	}
	forces = forces || n.forces
	if (n.object || n.list) && !n.sensitive && !n.unknown && len(n.children) > 0 {
		var out []Attribute
		for _, c := range n.children {
			out = append(out, leaves(c, forces)...)
		}
		return out
	}
	a := Attribute{Path: n.path, Action: n.op.String(), Sensitive: n.sensitive, Unknown: n.unknown, ForcesReplacement: forces}
	if !n.sensitive {
		a.Old, a.New = leafValue(n, n.old, n.hasOld), leafValue(n, n.new, n.hasNew)
		if n.unknown {
			a.New = nil
		}
	}
	return []Attribute{a}
}

func leafValue(n *node, v any, has bool) any {
	switch {
	case !has:
		return nil
	case n.object:
		return map[string]any{}
	case n.list:
		return []any{}
	}
	return v
}

// planned returns the resource changes that change something.
func planned(p *tfjson.Plan, sec secrets) []change {
	var out []change
	for _, rc := range p.ResourceChanges {
		if rc == nil || rc.Change == nil {
			continue
		}
		action := actionOf(rc.Change)
		if action == "" {
			continue
		}
		out = append(out, change{rc: rc, action: action, root: rootNode(rc.Change, sec)})
	}
	return out
}

// drifted returns the resource_drift entries that matter to the plan.
//
// Like terraform, only attributes the plan depends on count
// (relevant_attributes): right after an apply, resource_drift often holds
// changes no plan cares about (a provider normalizing a value), and
// terraform does not show those either.
func drifted(p *tfjson.Plan, sec secrets) []change {
	relevant := map[string]map[string]bool{}
	for _, ra := range p.RelevantAttributes {
		if relevant[ra.Resource] == nil {
			relevant[ra.Resource] = map[string]bool{}
		}
		var first string
		if len(ra.Attribute) > 0 && json.Unmarshal(ra.Attribute[0], &first) == nil {
			relevant[ra.Resource][first] = true
		}
	}
	var out []change
	for _, rc := range p.ResourceDrift {
		if rc == nil || rc.Change == nil {
			continue
		}
		a := rc.Change.Actions
		var action string
		switch {
		case a.Update():
			action = "update"
		case a.Delete():
			action = "delete"
		default:
			continue
		}
		root := rootNode(rc.Change, sec)
		if action == "update" {
			rel := relevant[rc.Address]
			kept := root.children[:0]
			for _, c := range root.children {
				if c.op == opSame || rel[c.key] {
					kept = append(kept, c)
				}
			}
			root.children = kept
			if root.op = containerOp(root); root.op == opSame {
				continue
			}
		}
		out = append(out, change{rc: rc, action: action, root: root})
	}
	return out
}

// output is one changed root output.
type output struct {
	name string
	root *node
}

func outputs(p *tfjson.Plan, sec secrets) []output {
	names := make([]string, 0, len(p.OutputChanges))
	for k := range p.OutputChanges {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []output
	bl := &builder{replace: map[string]bool{}, secrets: sec}
	for _, k := range names {
		c := p.OutputChanges[k]
		if c == nil || c.Actions.NoOp() {
			continue
		}
		n := bl.build(k, k, beforeSide(c), afterSide(c), c.AfterUnknown)
		if n.op == opSame {
			continue
		}
		out = append(out, output{name: k, root: n})
	}
	return out
}

func rootNode(c *tfjson.Change, sec secrets) *node {
	bl := &builder{replace: replacePaths(c.ReplacePaths), secrets: sec}
	n := bl.build("", "", beforeSide(c), afterSide(c), c.AfterUnknown)
	n.object = true
	return n
}

func beforeSide(c *tfjson.Change) side {
	return side{v: c.Before, has: c.Before != nil, sens: c.BeforeSensitive}
}

func afterSide(c *tfjson.Change) side {
	return side{v: c.After, has: c.After != nil, sens: c.AfterSensitive}
}

// actionOf names a change's action; "" for a no-op (unless importing).
func actionOf(c *tfjson.Change) string {
	a := c.Actions
	switch {
	case a.Create():
		return "create"
	case a.Update():
		return "update"
	case a.Replace():
		return "replace"
	case a.Delete():
		return "delete"
	case a.Read():
		return "read"
	case a.Forget():
		return "forget"
	case a.NoOp() && c.Importing != nil:
		return "import"
	}
	return ""
}

// Redacted returns a copy of d with redact applied to every path and string
// value: the agent's own secret redaction on top of terraform's sensitive
// marks, before the diff is stored.
func (d *Diff) Redacted(redact func(string) string) *Diff {
	if d == nil || redact == nil {
		return d
	}
	out := &Diff{Resources: redactResources(d.Resources, redact), Drift: redactResources(d.Drift, redact)}
	if d.Outputs != nil {
		out.Outputs = redactAttributes(d.Outputs, redact)
	}
	if out.Resources == nil {
		out.Resources = []Resource{}
	}
	return out
}

func redactResources(rs []Resource, redact func(string) string) []Resource {
	if rs == nil {
		return nil
	}
	out := make([]Resource, len(rs))
	for i, r := range rs {
		r.Attributes = redactAttributes(r.Attributes, redact)
		out[i] = r
	}
	return out
}

// RedactAttributes is Redacted for a list of attributes (drift details).
func RedactAttributes(as []Attribute, redact func(string) string) []Attribute {
	if redact == nil {
		return as
	}
	return redactAttributes(as, redact)
}

func redactAttributes(as []Attribute, redact func(string) string) []Attribute {
	out := make([]Attribute, len(as))
	for i, a := range as {
		a.Path = redact(a.Path)
		a.Old, a.New = redactValue(a.Old, redact), redactValue(a.New, redact)
		out[i] = a
	}
	return out
}

// redactValue redacts strings, also inside the whole old value of a
// collection that becomes "(known after apply)".
func redactValue(v any, redact func(string) string) any {
	switch x := v.(type) {
	case string:
		return redact(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[redact(k)] = redactValue(e, redact)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = redactValue(e, redact)
		}
		return out
	}
	return v // numbers, bools and null hold no text
}
