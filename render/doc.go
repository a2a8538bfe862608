package render

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteModuleList writes the modules as a table (grape templates list).
func (c *Catalog) WriteModuleList(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tINPUTS\tOUTPUTS\tDESCRIPTION")
	for _, m := range c.modules {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", m.Name, len(m.Variables), len(m.Outputs), firstSentence(m.Description))
	}
	return tw.Flush()
}

// WriteModule writes a module's description, inputs (type, default,
// description) and outputs as tables (grape templates show NAME).
func (c *Catalog) WriteModule(w io.Writer, name string) error {
	m, ok := c.byName[name]
	if !ok {
		return fmt.Errorf("no module %q in template set %s; modules: %s", name, c.Version, strings.Join(c.ModuleNames(), ", "))
	}
	if m.Description != "" {
		fmt.Fprintf(w, "%s: %s\n\n", m.Name, m.Description)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INPUT\tTYPE\tDEFAULT\tDESCRIPTION")
	for _, v := range m.Variables {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, oneLine(v.TypeExpr), c.defaultCell(m, &v), v.Description+stackIdentityNote(&v))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OUTPUT\tDESCRIPTION")
	for _, o := range m.Outputs {
		desc := o.Description
		if o.Sensitive {
			desc += " (sensitive)"
		}
		fmt.Fprintf(tw, "%s\t%s\n", o.Name, desc)
	}
	return tw.Flush()
}

// defaultCell says where an input's value comes from when the intent does
// not set it.
func (c *Catalog) defaultCell(m *Module, v *Variable) string {
	switch {
	case v.Sensitive:
		return fmt.Sprintf("agent: TF_VAR_%s (else %s)", rootVarName(m.Name, v.Name), v.DefaultString())
	case v.Name == tagsInput:
		return "top-level tags + " + v.DefaultString()
	case v.Wiring != nil:
		return "wired: " + v.DefaultString()
	}
	return v.DefaultString()
}

// WriteMarkdownReference writes the per-module input reference of
// docs/intent.md: one table per module, generated from the templates.
func (c *Catalog) WriteMarkdownReference(w io.Writer) error {
	fmt.Fprintf(w, "Generated from template set %s by `go test ./render -run TestIntentDoc -update`.\n", c.Version)
	for _, m := range c.modules {
		fmt.Fprintf(w, "\n### `%s`\n\n", m.Name)
		if m.Description != "" {
			fmt.Fprintf(w, "%s\n\n", m.Description)
		}
		fmt.Fprintln(w, "| Input | Type | Default | Description |")
		fmt.Fprintln(w, "|---|---|---|---|")
		for _, v := range m.Variables {
			fmt.Fprintf(w, "| `%s` | `%s` | %s | %s |\n", v.Name, mdEscape(oneLine(v.TypeExpr)), mdDefault(c.defaultCell(m, &v)), mdEscape(v.Description+stackIdentityNote(&v)))
		}
		var outs []string
		for _, o := range m.Outputs {
			outs = append(outs, "`"+o.Name+"`")
		}
		if len(outs) > 0 {
			fmt.Fprintf(w, "\nOutputs (in the root as `%s_<output>`): %s.\n", m.Name, strings.Join(outs, ", "))
		}
	}
	_, err := fmt.Fprintln(w)
	return err
}

// stackIdentityNote tells a reader that changing the input of an applied
// config is refused, and why (docs/operations.md, "Where state lives").
func stackIdentityNote(v *Variable) string {
	if !v.StackIdentity {
		return ""
	}
	return " Stack identity: changing it on an applied config is refused: " + v.StackIdentityWhy + "."
}

func mdDefault(s string) string {
	if strings.HasPrefix(s, "(") {
		return s
	}
	return "`" + mdEscape(s) + "`"
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func firstSentence(s string) string {
	if i := strings.Index(s, ". "); i >= 0 {
		return s[:i+1]
	}
	return s
}
