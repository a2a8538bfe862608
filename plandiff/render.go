package plandiff

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	tfjson "github.com/hashicorp/terraform-json"
)

const (
	sensitiveText = "(sensitive value)"
	unknownText   = "(known after apply)"
)

// Render writes the plan as terraform's human plan output shows it, without
// the final "Plan: …" line (the caller prints terraform's own). It writes
// nothing sensitive.
func Render(w io.Writer, p *tfjson.Plan) error {
	bw := bufio.NewWriter(w)
	r := &renderer{w: bw}
	r.plan(p)
	return bw.Flush()
}

// Lines is Render cut into lines, for line-oriented log sinks.
func Lines(p *tfjson.Plan) []string {
	var sb strings.Builder
	_ = Render(&sb, p) // a strings.Builder does not fail
	return strings.Split(strings.TrimSuffix(sb.String(), "\n"), "\n")
}

type renderer struct {
	w *bufio.Writer
}

func (r *renderer) line(format string, args ...any) {
	fmt.Fprintf(r.w, format, args...)
	r.w.WriteByte('\n')
}

func (r *renderer) plan(p *tfjson.Plan) {
	if p == nil {
		return
	}
	sec := planSecrets(p)
	if d := drifted(p, sec); len(d) > 0 {
		r.line("Note: Objects have changed outside of Terraform")
		r.line("")
		r.line("Terraform detected the following changes made outside of Terraform since the")
		r.line(`last "terraform apply" which may have affected this plan:`)
		for _, c := range d {
			r.line("")
			r.resource(c, true)
		}
		r.line("")
		r.line("Unless you have made equivalent changes to your configuration, or ignored the")
		r.line("relevant attributes using ignore_changes, the following plan may include")
		r.line("actions to undo or respond to these changes.")
		r.line("")
		r.line("%s", strings.Repeat("─", 77))
		r.line("")
	}
	changes, outs := planned(p, sec), outputs(p, sec)
	if len(changes) == 0 && len(outs) == 0 {
		r.line("No changes. Your infrastructure matches the configuration.")
		r.line("")
		r.line("Terraform has compared your real infrastructure against your configuration")
		r.line("and found no differences, so no changes are needed.")
		return
	}
	if len(changes) > 0 {
		r.line("Terraform will perform the following actions:")
		for _, c := range changes {
			r.line("")
			r.resource(c, false)
		}
	}
	if len(outs) > 0 {
		r.line("")
		r.line("Changes to Outputs:")
		width := 0
		for _, o := range outs {
			width = max(width, len(o.name))
		}
		for _, o := range outs {
			r.attr(o.root, 0, width, true)
		}
	}
}

// header says what happens to a resource, in terraform's words.
func header(c change, drift bool) (comment, symbol string) {
	rc := c.rc
	addr := rc.Address
	if rc.DeposedKey != "" {
		addr += fmt.Sprintf(" (deposed object %s)", rc.DeposedKey)
	}
	if drift {
		if c.action == "delete" {
			return addr + " has been deleted", "-"
		}
		return addr + " has changed", "~"
	}
	a := rc.Change.Actions
	switch c.action {
	case "create":
		return addr + " will be created", "+"
	case "read":
		return addr + " will be read during apply", "<="
	case "update":
		return addr + " will be updated in-place", "~"
	case "forget":
		return addr + " will no longer be managed by Terraform", "."
	case "import":
		return addr + " will be imported", " "
	case "replace":
		sym := "-/+"
		if a.CreateBeforeDestroy() {
			sym = "+/-"
		}
		switch rc.ActionReason {
		case tfjson.ActionReasonReplaceBecauseTainted:
			return addr + " is tainted, so must be replaced", sym
		case tfjson.ActionReasonReplaceByRequest:
			return addr + " will be replaced, as requested", sym
		case tfjson.ActionReasonReplaceByTriggers:
			return addr + " will be replaced due to changes in replace_triggered_by", sym
		}
		return addr + " must be replaced", sym
	}
	comment = addr + " will be destroyed"
	switch rc.ActionReason {
	case tfjson.ActionReasonDeleteBecauseNoResourceConfig:
		comment += fmt.Sprintf("\n  # (because %s is not in configuration)", resourceAddr(rc))
	case tfjson.ActionReasonDeleteBecauseNoModule:
		comment += fmt.Sprintf("\n  # (because %s is not in configuration)", rc.ModuleAddress)
	case tfjson.ActionReasonDeleteBecauseWrongRepetition:
		comment += "\n  # (because resource uses count or for_each differently)"
	case tfjson.ActionReasonDeleteBecauseCountIndex:
		comment += fmt.Sprintf("\n  # (because index [%v] is out of range for count)", rc.Index)
	case tfjson.ActionReasonDeleteBecauseEachKey:
		comment += fmt.Sprintf("\n  # (because key [%q] is not in for_each map)", fmt.Sprint(rc.Index))
	case tfjson.ActionReasonDeleteBecauseNoMoveTarget:
		comment += "\n  # (because it was moved to an address that is not in configuration)"
	}
	return comment, "-"
}

func resourceAddr(rc *tfjson.ResourceChange) string {
	a := rc.Type + "." + rc.Name
	if rc.Mode == tfjson.DataResourceMode {
		a = "data." + a
	}
	if rc.ModuleAddress != "" {
		a = rc.ModuleAddress + "." + a
	}
	return a
}

func (r *renderer) resource(c change, drift bool) {
	comment, sym := header(c, drift)
	r.line("  # %s", comment)
	kind := "resource"
	if c.rc.Mode == tfjson.DataResourceMode {
		kind = "data"
	}
	r.line("%s %s %q %q {", pad(sym), kind, c.rc.Type, c.rc.Name)
	r.body(c.root, 1, true)
	r.line("%s}", indent(0))
}

// identifying attributes are shown even when unchanged, as terraform does,
// so an update says which object it is.
var identifying = map[string]bool{"id": true, "name": true}

// body writes the children of an object or list node at depth.
func (r *renderer) body(n *node, depth int, top bool) {
	show := make([]*node, 0, len(n.children))
	hidden := 0
	for _, c := range n.children {
		if c.op == opSame && n.op != opAdd && n.op != opRemove && !(top && identifying[c.key]) {
			hidden++
			continue
		}
		show = append(show, c)
	}
	width := 0
	if !n.list {
		for _, c := range show {
			width = max(width, len(keyText(c, top)))
		}
	}
	for _, c := range show {
		r.attr(c, depth, width, top)
	}
	if hidden > 0 {
		what := "element"
		if top {
			what = "attribute"
		}
		if hidden > 1 {
			what += "s"
		}
		r.line("%s# (%d unchanged %s hidden)", strings.Repeat(" ", 4*depth+4), hidden, what)
	}
}

func keyText(n *node, top bool) string {
	if top || n.key == "" {
		return n.key
	}
	return strconv.Quote(n.key)
}

func symbol(o op) string {
	switch o {
	case opAdd:
		return "+"
	case opRemove:
		return "-"
	case opChange:
		return "~"
	}
	return ""
}

// pad right-aligns a symbol in terraform's three-column gutter.
func pad(sym string) string { return fmt.Sprintf("%3s", sym) }

func indent(depth int) string { return strings.Repeat(" ", 4*depth+4) }

// attr writes one attribute, map entry or list element.
func (r *renderer) attr(n *node, depth, width int, top bool) {
	lead := strings.Repeat(" ", 4*depth) + pad(symbol(n.op)) + " "
	if n.key != "" || top {
		k := keyText(n, top)
		lead += k + strings.Repeat(" ", width-len(k)) + " = "
	}
	tail := ""
	if n.key == "" && !top {
		tail = ","
	}
	forces := ""
	if n.forces {
		forces = " # forces replacement"
	}
	switch {
	case n.sensitive:
		r.line("%s%s%s%s", lead, sensitiveText, tail, forces)
	case n.unknown && n.op == opChange:
		r.line("%s%s -> %s%s%s", lead, scalar(n.old), unknownText, tail, forces)
	case n.unknown:
		r.line("%s%s%s%s", lead, unknownText, tail, forces)
	case n.object || n.list:
		open, closing := "{", "}"
		if n.list {
			open, closing = "[", "]"
		}
		if len(n.children) == 0 {
			r.line("%s%s%s%s%s", lead, open, closing, removed(n), tail+forces)
			return
		}
		r.line("%s%s%s", lead, open, forces)
		r.body(n, depth+1, false)
		r.line("%s%s%s%s", indent(depth), closing, removed(n), tail)
	case n.op == opChange:
		r.line("%s%s -> %s%s%s", lead, scalar(n.old), scalar(n.new), tail, forces)
	case n.op == opRemove && n.key == "" && !top:
		r.line("%s%s%s%s", lead, scalar(n.old), tail, forces) // a list element
	case n.op == opRemove:
		r.line("%s%s -> null%s%s", lead, scalar(n.old), tail, forces)
	case n.op == opAdd:
		r.line("%s%s%s%s", lead, scalar(n.new), tail, forces)
	default:
		r.line("%s%s%s%s", lead, scalar(n.new), tail, forces)
	}
}

func removed(n *node) string {
	if n.op == opRemove {
		return " -> null"
	}
	return ""
}

// scalar formats a leaf value as terraform's plan output does.
func scalar(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case bool:
		return strconv.FormatBool(x)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		return x.String()
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = strconv.Quote(k) + " = " + scalar(x[k])
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = scalar(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v)
}
