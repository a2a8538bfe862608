package plandiff

import (
	"strings"

	tfjson "github.com/hashicorp/terraform-json"
)

// minContained is the shortest secret looked for inside longer strings;
// shorter ones redact only values equal to them (a 2-letter secret would
// otherwise hide every string holding those letters).
const minContained = 4

// secrets are the plan's sensitive strings: every value under a true
// sensitive marker anywhere in the plan and the root variables declared
// sensitive. terraform marks only the attribute a sensitive value was
// assigned to; a resource can copy it into an unmarked one (terraform_data's
// output echoes its input), which terraform's own renderer then prints. Any
// leaf holding one of these strings is shown as sensitive here.
type secrets map[string]bool

func planSecrets(p *tfjson.Plan) secrets {
	s := secrets{}
	mark := func(c *tfjson.Change) {
		if c == nil {
			return
		}
		s.collect(c.Before, c.BeforeSensitive, false)
		s.collect(c.After, c.AfterSensitive, false)
	}
	for _, rc := range p.ResourceChanges {
		if rc != nil {
			mark(rc.Change)
		}
	}
	for _, rc := range p.ResourceDrift {
		if rc != nil {
			mark(rc.Change)
		}
	}
	for _, c := range p.OutputChanges {
		mark(c)
	}
	if p.Config != nil && p.Config.RootModule != nil {
		for name, v := range p.Config.RootModule.Variables {
			if v != nil && v.Sensitive && p.Variables[name] != nil {
				s.collect(p.Variables[name].Value, true, false)
			}
		}
	}
	delete(s, "")
	return s
}

// collect adds the strings under v whose marker (or an ancestor's) is true.
func (s secrets) collect(v, marker any, inherited bool) {
	sens := inherited || isTrue(marker)
	switch x := v.(type) {
	case string:
		if sens {
			s[x] = true
		}
	case map[string]any:
		for k, e := range x {
			s.collect(e, field(marker, k), sens)
		}
	case []any:
		for i, e := range x {
			s.collect(e, elem(marker, i), sens)
		}
	}
}

// in reports whether v (or anything in it) holds a secret.
func (s secrets) in(v any) bool {
	if len(s) == 0 {
		return false
	}
	switch x := v.(type) {
	case string:
		if s[x] {
			return true
		}
		for sec := range s {
			if len(sec) >= minContained && strings.Contains(x, sec) {
				return true
			}
		}
	case map[string]any:
		for _, e := range x {
			if s.in(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if s.in(e) {
				return true
			}
		}
	}
	return false
}
