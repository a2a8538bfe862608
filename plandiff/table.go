package plandiff

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable prints a stored Diff for `grape status --diff`: per resource
// its address and action, then one line per changed value. It reads only
// the Diff, which holds no sensitive value.
func WriteTable(w io.Writer, d *Diff) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	section := func(title string, rs []Resource) {
		if len(rs) == 0 {
			return
		}
		fmt.Fprintf(tw, "%s\n", title)
		for _, r := range rs {
			head := r.Address + " (" + r.Action
			if r.Reason != "" {
				head += ": " + r.Reason
			}
			fmt.Fprintf(tw, "  %s)\n", head)
			for _, a := range r.Attributes {
				writeAttribute(tw, "    ", a)
			}
		}
	}
	if d == nil {
		fmt.Fprintln(tw, "no plan diff recorded (the deployment has not planned yet, or was planned before Grape stored diffs)")
	} else {
		section("Changed outside of Terraform:", d.Drift)
		if d.Empty() {
			fmt.Fprintln(tw, "No changes. Your infrastructure matches the configuration.")
		}
		section("Planned changes:", d.Resources)
		if len(d.Outputs) > 0 {
			fmt.Fprintln(tw, "Changes to outputs:")
			for _, a := range d.Outputs {
				writeAttribute(tw, "  ", a)
			}
		}
	}
	return tw.Flush()
}

func writeAttribute(w io.Writer, indent string, a Attribute) {
	sym := map[string]string{"add": "+", "remove": "-", "change": "~"}[a.Action]
	var v string
	switch {
	case a.Sensitive:
		v = sensitiveText
	case a.Action == "add" && a.Unknown:
		v = unknownText
	case a.Action == "add":
		v = scalar(a.New)
	case a.Action == "remove":
		v = scalar(a.Old) + " -> null"
	case a.Unknown:
		v = scalar(a.Old) + " -> " + unknownText
	default:
		v = scalar(a.Old) + " -> " + scalar(a.New)
	}
	if a.ForcesReplacement {
		v += "  # forces replacement"
	}
	fmt.Fprintf(w, "%s%s %s\t%s\n", indent, sym, a.Path, v)
}
