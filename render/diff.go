package render

import (
	"bytes"
	"sort"
	"strings"
)

// DiffIntent describes how an intent changed, one line per changed leaf,
// ordered by path, for commit messages and reviews:
//
//	modules.vpc.cidr: "10.0.0.0/16" → "10.1.0.0/16"
//	+ modules.rds
//	+ modules.rds.instance_class: "db.t4g.small"
//	- modules.karpenter
//
// A module switched on or off is one line of its own ("+ modules.rds"),
// followed by the inputs it was given. Arrays compare as whole values.
// Either side may be empty (a first rendering). A side that is not valid
// JSON yields a single line saying so rather than an error: the diff is a
// description, and the intent was validated elsewhere. Intents hold no secrets
// (Validate refuses sensitive inputs), so the lines are safe to commit.
func DiffIntent(old, new []byte) []string {
	a, errA := diffTree(old)
	b, errB := diffTree(new)
	if errA != "" || errB != "" {
		var why []string
		if errA != "" {
			why = append(why, "old intent: "+errA)
		}
		if errB != "" {
			why = append(why, "new intent: "+errB)
		}
		return []string{"intent not comparable: " + strings.Join(why, "; ")}
	}
	var lines []diffLine
	diffValues(&lines, "", a, b)
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].path < lines[j].path })
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.text
	}
	return out
}

type diffLine struct{ path, text string }

func diffTree(data []byte) (any, string) {
	if len(bytes.TrimSpace(data)) == 0 {
		return &object{m: map[string]any{}}, ""
	}
	v, err := decodeJSON(data)
	if err != nil {
		return nil, err.Error()
	}
	return v, ""
}

func diffValues(lines *[]diffLine, path string, a, b any) {
	oa, aObj := a.(*object)
	ob, bObj := b.(*object)
	if aObj && bObj {
		keys := map[string]bool{}
		for _, k := range oa.keys {
			keys[k] = true
		}
		for _, k := range ob.keys {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			p := JoinPath(path, k)
			va, inA := oa.m[k]
			vb, inB := ob.m[k]
			switch {
			case inA && inB:
				diffValues(lines, p, va, vb)
			case inB:
				added(lines, p, vb, "+ ")
			default:
				added(lines, p, va, "- ")
			}
		}
		return
	}
	ca, cb := compactJSON(a), compactJSON(b)
	if ca != cb {
		*lines = append(*lines, diffLine{path, path + ": " + ca + " → " + cb})
	}
}

// added lists a key that exists on one side only: an object (a module) as
// its own line followed by its leaves, a scalar or array as "path: value".
func added(lines *[]diffLine, path string, v any, sign string) {
	o, ok := v.(*object)
	if !ok {
		*lines = append(*lines, diffLine{path, sign + path + ": " + compactJSON(v)})
		return
	}
	*lines = append(*lines, diffLine{path, sign + path})
	keys := append([]string(nil), o.keys...)
	sort.Strings(keys)
	for _, k := range keys {
		added(lines, JoinPath(path, k), o.m[k], sign)
	}
}
