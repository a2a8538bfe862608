package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// DefaultRegion is the AWS region of an intent that names none.
const DefaultRegion = "eu-central-1"

// Top-level keys of an intent.
var topLevelKeys = []string{"backend", "environment", "modules", "region", "tags"}

var (
	// Region names as AWS spells them (eu-central-1, us-gov-west-1,
	// ap-southeast-7); the list of regions itself changes too often to embed.
	regionRE = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$`)
	// Characters AWS allows in tag keys and values.
	tagCharsRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

const (
	maxTags        = 40 // AWS allows 50 per resource; modules add their own
	maxTagKeyLen   = 128
	maxTagValueLen = 256
	maxEnvLen      = 64
)

// Intent is a validated intent: which modules are on and the inputs the
// person set. Only Validate creates one.
type Intent struct {
	digest      string // of the catalog that validated it
	enabled     []string
	region      string
	environment string
	tags        map[string]string
	inputs      map[string]map[string]any // enabled module → input → value
	backend     BackendSpec
	normalized  []byte
}

// EnabledModules returns the modules that are on, in catalog order.
func (in *Intent) EnabledModules() []string { return slices.Clone(in.enabled) }

// Region returns the AWS region (DefaultRegion when the intent names none).
func (in *Intent) Region() string { return in.region }

// Environment returns the intent's environment label ("" when unset).
func (in *Intent) Environment() string { return in.environment }

// Tags returns a copy of the intent's top-level tags.
func (in *Intent) Tags() map[string]string {
	out := make(map[string]string, len(in.tags))
	for k, v := range in.tags {
		out[k] = v
	}
	return out
}

// Backend returns where state lives: Type "local" when the intent names no
// backend. An S3 backend's Key is empty when the intent leaves it to the
// default (DefaultStateKey); Tree.Backend carries the resolved one.
func (in *Intent) Backend() BackendSpec { return in.backend }

// JSON returns the normalised intent: sorted keys, canonical numbers, the
// region filled in, "enabled": true dropped. The same meaning always gives
// the same bytes; it is what intent.json holds and what DiffIntent compares.
func (in *Intent) JSON() []byte { return bytes.Clone(in.normalized) }

// Inputs returns the inputs the intent sets for an enabled module, as JSON.
func (in *Intent) Inputs(module string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for k, v := range in.inputs[module] {
		out[k] = json.RawMessage(compactJSON(v))
	}
	return out
}

// Validate checks an intent (a config's spec) against the catalog and
// returns it normalised. Every problem is reported at once in a
// *ValidationError; each names the JSON path and how to fix it.
func (c *Catalog) Validate(spec []byte) (*Intent, error) {
	var p problems
	if len(spec) > MaxIntentSize {
		p.add("", "is %d bytes; the limit is %d (1 MiB): keep only what differs from the module defaults", len(spec), MaxIntentSize)
		return nil, p.err()
	}
	if len(bytes.TrimSpace(spec)) == 0 {
		p.add("", `is empty: write a JSON object such as {"region": "eu-central-1", "modules": {"vpc": {}}}`)
		return nil, p.err()
	}
	tree, err := decodeJSON(spec)
	if err != nil {
		var pe *pathError
		if errors.As(err, &pe) {
			p.add(pe.path, "%s", pe.msg)
		} else {
			p.add("", "%s", err.Error())
		}
		return nil, p.err()
	}
	top, ok := tree.(*object)
	if !ok {
		p.add("", `must be a JSON object such as {"region": "eu-central-1", "modules": {"vpc": {}}}, got %s`, describe(tree))
		return nil, p.err()
	}

	v := &validator{c: c, p: &p, set: map[string]map[string]cty.Value{}, present: map[string]bool{}, enabledBy: map[string]bool{}}
	in := &Intent{digest: c.Digest, region: DefaultRegion, tags: map[string]string{}, inputs: map[string]map[string]any{}, backend: BackendSpec{Type: "local"}}
	norm := map[string]any{}
	var modules *object

	for _, k := range top.keys {
		val := top.m[k]
		switch k {
		case "region":
			if s, ok := v.str(k, val); ok {
				if !regionRE.MatchString(s) {
					p.add(k, "%q is not an AWS region name; use one such as %q", truncate(s, 40), DefaultRegion)
				} else {
					in.region = s
				}
			}
		case "environment":
			if s, ok := v.str(k, val); ok && s != "" {
				switch {
				case len(s) > maxEnvLen:
					p.add(k, "is %d characters; the limit is %d", len(s), maxEnvLen)
				case !tagCharsRE.MatchString(s):
					p.add(k, "%q has characters AWS does not allow in a tag value; use letters, digits, spaces and _ . : / = + - @", truncate(s, 40))
				default:
					in.environment = s
					norm["environment"] = s
				}
			}
		case "tags":
			if tags, ok := v.tags(k, val); ok {
				in.tags = tags
				if len(tags) > 0 {
					norm["tags"] = plain(val)
				}
			}
		case "modules":
			if o, ok := val.(*object); ok {
				modules = o
			} else {
				p.add(k, `must be a JSON object of modules such as {"vpc": {}}, got %s`, describe(val))
			}
		case "backend":
			if b, keep, ok := v.backend(k, val); ok {
				in.backend = b
				if keep {
					norm["backend"] = plain(val)
				}
			}
		default:
			p.add(k, "unknown key%s; valid keys: %s", suggest(k, topLevelKeys), strings.Join(topLevelKeys, ", "))
		}
	}
	if in.backend.Type == "s3" && in.backend.Region == "" {
		in.backend.Region = in.region
	}
	norm["region"] = in.region

	normModules := map[string]any{}
	if modules != nil {
		for _, name := range modules.keys {
			if mv, keep := v.module(name, modules.m[name]); keep {
				normModules[name] = mv
			}
		}
	}
	norm["modules"] = normModules

	for _, m := range c.modules {
		if v.enabledBy[m.Name] {
			in.enabled = append(in.enabled, m.Name)
		}
	}
	v.dependencies()
	v.staticValidations()
	v.crossChecks()

	if err := p.err(); err != nil {
		return nil, err
	}
	for _, name := range in.enabled {
		in.inputs[name] = v.raw[name]
	}
	in.normalized, err = encodeJSON(norm)
	if err != nil {
		return nil, fmt.Errorf("encoding normalised intent: %w", err)
	}
	return in, nil
}

// validator holds what Validate learned so far.
type validator struct {
	c *Catalog
	p *problems
	// set holds the typed value of every input the intent sets (that passed
	// its type check), by module; raw holds the JSON value.
	set       map[string]map[string]cty.Value
	raw       map[string]map[string]any
	present   map[string]bool // module key present in the intent
	enabledBy map[string]bool // module on
}

func (v *validator) str(path string, val any) (string, bool) {
	s, ok := val.(string)
	if !ok {
		v.p.add(path, "must be a string, got %s", describe(val))
	}
	return s, ok
}

func (v *validator) tags(path string, val any) (map[string]string, bool) {
	o, ok := val.(*object)
	if !ok {
		v.p.add(path, `must be a JSON object of tag names to values such as {"team": "platform"}, got %s`, describe(val))
		return nil, false
	}
	n := len(v.p.list)
	if len(o.keys) > maxTags {
		v.p.add(path, "has %d tags; the limit is %d", len(o.keys), maxTags)
	}
	tags := map[string]string{}
	for _, k := range o.keys {
		kp := JoinPath(path, k)
		s, ok := o.m[k].(string)
		if !ok {
			v.p.add(kp, "must be a string, got %s", describe(o.m[k]))
			continue
		}
		checkTag(v.p, kp, k, s)
		tags[k] = s
	}
	return tags, len(v.p.list) == n
}

func checkTag(p *problems, path, k, val string) {
	lower := strings.ToLower(k)
	switch {
	case k == "":
		p.add(path, "tag name must not be empty")
	case strings.HasPrefix(lower, "aws:"):
		p.add(path, "tag names starting with aws: are reserved by AWS; choose another name")
	case strings.HasPrefix(lower, "grape:"):
		p.add(path, "tag names starting with grape: are set by Grape itself (grape:cluster, grape:config, grape:environment); choose another name")
	case len(k) > maxTagKeyLen:
		p.add(path, "tag name is %d characters; the limit is %d", len(k), maxTagKeyLen)
	case !tagCharsRE.MatchString(k):
		p.add(path, "tag name has characters AWS does not allow; use letters, digits, spaces and _ . : / = + - @")
	case len(val) > maxTagValueLen:
		p.add(path, "tag value is %d characters; the limit is %d", len(val), maxTagValueLen)
	case !tagCharsRE.MatchString(val):
		p.add(path, "tag value %q has characters AWS does not allow; use letters, digits, spaces and _ . : / = + - @", truncate(val, 40))
	}
}

// module validates one entry of "modules" and returns its normalised form
// and whether to keep it.
func (v *validator) module(name string, val any) (any, bool) {
	path := JoinPath("modules", name)
	m, ok := v.c.byName[name]
	if !ok {
		v.p.add(path, "unknown module%s; valid modules: %s", suggest(name, v.c.ModuleNames()), strings.Join(v.c.ModuleNames(), ", "))
		return nil, false
	}
	o, ok := val.(*object)
	if !ok {
		v.p.add(path, `must be a JSON object of the module's inputs ({} for all defaults), got %s`, describe(val))
		return nil, false
	}
	v.present[name] = true
	enabled := true
	norm := map[string]any{}
	if ev, has := o.get(enabledKey); has {
		b, isBool := ev.(bool)
		if !isBool {
			v.p.add(JoinPath(path, enabledKey), "must be true or false, got %s", describe(ev))
		} else {
			enabled = b
			if !b {
				norm[enabledKey] = false
			}
		}
	}
	v.enabledBy[name] = enabled
	if v.set[name] == nil {
		v.set[name] = map[string]cty.Value{}
	}
	if v.raw == nil {
		v.raw = map[string]map[string]any{}
	}
	if v.raw[name] == nil {
		v.raw[name] = map[string]any{}
	}
	for _, k := range o.keys {
		if k == enabledKey {
			continue
		}
		kp := JoinPath(path, k)
		iv := o.m[k]
		vr := m.variable(k)
		if vr == nil {
			valid := settableNames(m)
			v.p.add(kp, "unknown input%s for module %s; valid inputs: %s", suggest(k, valid), name, strings.Join(valid, ", "))
			continue
		}
		if vr.Sensitive {
			v.p.add(kp, "is sensitive and must not be in the intent (intents are stored in the database and committed to git): remove it and set TF_VAR_%s in the agent's environment instead, or leave it unset to get the module's default (%s)",
				rootVarName(name, k), vr.DefaultString())
			continue
		}
		if iv == nil {
			hint := "remove the key to get the default"
			if vr.Default != nil {
				hint = fmt.Sprintf("remove the key to get the default (%s)", vr.DefaultString())
			} else if vr.Wiring != nil {
				hint = fmt.Sprintf("remove the key to get %s", vr.DefaultString())
			}
			v.p.add(kp, "must not be null; %s", hint)
			continue
		}
		n := len(v.p.list)
		checkType(v.p, kp, vr.Type, iv)
		if vr.Name == tagsInput && len(v.p.list) == n {
			if to, ok := iv.(*object); ok {
				for _, tk := range to.keys {
					if s, ok := to.m[tk].(string); ok {
						checkTag(v.p, JoinPath(kp, tk), tk, s)
					}
				}
			}
		}
		if len(v.p.list) != n {
			continue
		}
		typed, err := toCty(iv, vr.Type, vr.defaults)
		if err != nil {
			v.p.add(kp, "cannot be used as %s: %v", vr.TypeExpr, err)
			continue
		}
		v.set[name][k] = typed
		v.raw[name][k] = plain(iv)
		norm[k] = plain(iv)
	}
	return norm, true
}

func settableNames(m *Module) []string {
	var out []string
	for _, vr := range m.Variables {
		if vr.settable() {
			out = append(out, vr.Name)
		}
	}
	sort.Strings(out)
	return out
}

// dependencies reports enabled modules whose required inputs are neither set
// nor wired from an enabled module, one message per missing producer.
func (v *validator) dependencies() {
	for _, m := range v.c.modules {
		if !v.enabledBy[m.Name] {
			continue
		}
		path := JoinPath("modules", m.Name)
		var producers []string
		needs := map[string][]string{}
		for _, vr := range m.Variables {
			if !vr.Required || vr.Sensitive {
				continue
			}
			if _, set := v.set[m.Name][vr.Name]; set || v.hasInputError(m.Name, vr.Name) {
				continue
			}
			if w := vr.Wiring; w != nil {
				if v.enabledBy[w.From] {
					continue
				}
				if needs[w.From] == nil {
					producers = append(producers, w.From)
				}
				needs[w.From] = append(needs[w.From], vr.Name)
				continue
			}
			desc := ""
			if vr.Description != "" {
				desc = ": " + vr.Description
			}
			v.p.add(JoinPath(path, vr.Name), "required input is missing; set it (type %s)%s", oneLine(vr.TypeExpr), desc)
		}
		for _, from := range producers {
			inputs := needs[from]
			sets := make([]string, len(inputs))
			for i, in := range inputs {
				sets[i] = JoinPath(path, in)
			}
			what := strings.Join(inputs, " and ")
			set := strings.Join(sets, " and ")
			if v.present[from] {
				v.p.add(path, "needs module %s for %s: enable it (modules.%s.enabled is false), or set %s", from, what, from, set)
			} else {
				v.p.add(path, `needs module %s for %s: add "%s": {} to modules, or set %s`, from, what, from, set)
			}
		}
	}
}

// hasInputError reports whether an error was already recorded for the input
// (a type error), so it is not also reported as missing or invalid.
func (v *validator) hasInputError(module, input string) bool {
	return v.hasErrorUnder(JoinPath(JoinPath("modules", module), input))
}

// hasErrorUnder reports whether an error was recorded at path or inside it.
func (v *validator) hasErrorUnder(path string) bool {
	for _, fe := range v.p.list {
		if fe.Path == path || strings.HasPrefix(fe.Path, path+".") || strings.HasPrefix(fe.Path, path+"[") {
			return true
		}
	}
	return false
}

// describe names a JSON value's kind for messages, with a short excerpt of
// scalars.
func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", truncate(t, 40))
	case json.Number:
		return "number " + string(t)
	case bool:
		return fmt.Sprintf("%v", t)
	case []any:
		return "an array"
	case *object:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// checkType checks a JSON value against an HCL type constraint strictly:
// unlike Terraform's conversion it accepts no "5" for a number and no extra
// object attributes, so typos fail here rather than vanish.
func checkType(p *problems, path string, ty cty.Type, val any) {
	if ty == cty.DynamicPseudoType {
		return
	}
	if val == nil {
		p.add(path, "must not be null; remove it or give %s", want(ty))
		return
	}
	switch {
	case ty == cty.String:
		if _, ok := val.(string); !ok {
			p.add(path, "must be %s, got %s", want(ty), describe(val))
		}
	case ty == cty.Number:
		if _, ok := val.(json.Number); !ok {
			p.add(path, "must be %s, got %s", want(ty), describe(val))
		}
	case ty == cty.Bool:
		if _, ok := val.(bool); !ok {
			p.add(path, "must be %s, got %s", want(ty), describe(val))
		}
	case ty.IsListType() || ty.IsSetType():
		arr, ok := val.([]any)
		if !ok {
			p.add(path, "must be %s, got %s", want(ty), describe(val))
			return
		}
		for i, e := range arr {
			checkType(p, fmt.Sprintf("%s[%d]", path, i), ty.ElementType(), e)
		}
	case ty.IsTupleType():
		arr, ok := val.([]any)
		types := ty.TupleElementTypes()
		if !ok || len(arr) != len(types) {
			p.add(path, "must be %s, got %s", want(ty), describe(val))
			return
		}
		for i, e := range arr {
			checkType(p, fmt.Sprintf("%s[%d]", path, i), types[i], e)
		}
	case ty.IsMapType():
		o, ok := val.(*object)
		if !ok {
			p.add(path, "must be %s, got %s", want(ty), describe(val))
			return
		}
		for _, k := range o.keys {
			checkType(p, JoinPath(path, k), ty.ElementType(), o.m[k])
		}
	case ty.IsObjectType():
		o, ok := val.(*object)
		if !ok {
			p.add(path, "must be %s, got %s", want(ty), describe(val))
			return
		}
		attrs := ty.AttributeTypes()
		names := make([]string, 0, len(attrs))
		for n := range attrs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, k := range o.keys {
			at, ok := attrs[k]
			if !ok {
				p.add(JoinPath(path, k), "unknown attribute%s; valid attributes: %s", suggest(k, names), strings.Join(names, ", "))
				continue
			}
			if o.m[k] == nil && ty.AttributeOptional(k) {
				continue
			}
			checkType(p, JoinPath(path, k), at, o.m[k])
		}
		for _, n := range names {
			if _, has := o.m[n]; !has && !ty.AttributeOptional(n) {
				p.add(JoinPath(path, n), "required attribute is missing; set it (type %s)", typeexpr.TypeString(attrs[n]))
			}
		}
	}
}

func want(ty cty.Type) string {
	switch {
	case ty == cty.String:
		return "a string"
	case ty == cty.Number:
		return "a number"
	case ty == cty.Bool:
		return "true or false"
	case ty.IsListType(), ty.IsSetType(), ty.IsTupleType():
		return "a JSON array (" + typeexpr.TypeString(ty) + ")"
	case ty.IsMapType(), ty.IsObjectType():
		return "a JSON object (" + typeexpr.TypeString(ty) + ")"
	}
	return typeexpr.TypeString(ty)
}

// toCty converts a type-checked JSON value to the variable's type the way
// Terraform does: optional attribute defaults first, then conversion.
func toCty(val any, ty cty.Type, defs *typeexpr.Defaults) (cty.Value, error) {
	cv, err := jsonCty(val)
	if err != nil {
		return cty.NilVal, err
	}
	if defs != nil {
		cv = defs.Apply(cv)
	}
	return convert.Convert(cv, ty)
}

func jsonCty(val any) (cty.Value, error) {
	switch t := val.(type) {
	case nil:
		return cty.NullVal(cty.DynamicPseudoType), nil
	case string:
		return cty.StringVal(t), nil
	case bool:
		return cty.BoolVal(t), nil
	case json.Number:
		return cty.ParseNumberVal(string(t))
	case []any:
		if len(t) == 0 {
			return cty.EmptyTupleVal, nil
		}
		elems := make([]cty.Value, len(t))
		for i, e := range t {
			ev, err := jsonCty(e)
			if err != nil {
				return cty.NilVal, err
			}
			elems[i] = ev
		}
		return cty.TupleVal(elems), nil
	case *object:
		if len(t.keys) == 0 {
			return cty.EmptyObjectVal, nil
		}
		attrs := make(map[string]cty.Value, len(t.keys))
		for _, k := range t.keys {
			ev, err := jsonCty(t.m[k])
			if err != nil {
				return cty.NilVal, err
			}
			attrs[k] = ev
		}
		return cty.ObjectVal(attrs), nil
	}
	return cty.NilVal, fmt.Errorf("unexpected JSON value %T", val)
}

// suggest returns ` (did you mean "x"?)` for a close valid name, else "".
func suggest(got string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := editDistance(strings.ToLower(got), strings.ToLower(v)); d < bestD {
			best, bestD = v, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
