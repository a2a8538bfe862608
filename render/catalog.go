// Package render turns a config's intent (JSON) into a reviewable Terraform
// root module built from a template set: it reads the templates' variables
// with hcl/v2, validates the intent against them, and writes the root module,
// its tfvars and a copy of the modules it uses.
package render

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/grapehq/grape/templates"
)

// Limits on a template set. A platform team's set comes from a directory or
// a git repository the agent fetches; these keep a mistaken or hostile one
// from exhausting the agent.
const (
	maxTemplateFileSize = 1 << 20
	maxTemplateSetSize  = 8 << 20
	maxTemplateFiles    = 500
	maxTemplateDirDepth = 8
	versionFile         = "VERSION"
	// LockFile is terraform's dependency lock file. At the top of a template
	// set it pins the providers of every module; each rendering carries it.
	LockFile             = ".terraform.lock.hcl"
	moduleReadme         = "README.md"
	tagsInput            = "tags"
	enabledKey           = "enabled"
	maxModulesInTemplate = 32
)

// knownOrder is the order of Grape's own modules; other modules a template
// set adds come after them, alphabetically.
var knownOrder = []string{"vpc", "eks", "rds", "karpenter"}

var (
	moduleNameRE   = regexp.MustCompile(`^[a-z][a-z0-9]{0,31}$`)
	identifierRE   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	versionRE      = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
	templateFileRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
)

// Catalog is a parsed and checked template set.
type Catalog struct {
	// Version is the content of the set's VERSION file.
	Version string
	// Digest is "sha256:<hex>" over every file of the set (paths and bytes),
	// so two sets with the same VERSION but different content differ.
	Digest string
	// Lock is the set's provider lock file (LockFile), nil when the set has
	// none. It is part of Digest: a provider upgrade is a new set.
	Lock []byte

	modules []*Module
	byName  map[string]*Module
}

// Module is one template module.
type Module struct {
	Name string
	// Description is the first paragraph of the module's README.md.
	Description string
	// Variables in declaration order (files by name, then position).
	Variables []Variable
	Outputs   []Output

	files map[string][]byte // paths relative to the module directory
}

// Variable is a module input as declared in its variable block.
type Variable struct {
	Name string
	// Type is the type constraint (cty.DynamicPseudoType when the block has
	// no type); TypeExpr is its source text, e.g. "list(string)".
	Type     cty.Type
	TypeExpr string
	// Default is nil when the variable has no default (it is Required);
	// DefaultExpr is the default's source text.
	Default     *cty.Value
	DefaultExpr string
	Description string
	Sensitive   bool
	Nullable    bool
	Required    bool
	// Wiring is set when Grape passes another module's output to this input
	// unless the intent sets it.
	Wiring *Wiring
	// Pos is "vpc/variables.tf:12", for messages.
	Pos string
	// StackIdentity is set by a `# grape:stack-identity <why>` comment on
	// the line above the variable block: changing the input replaces the
	// stack (or a part that holds data), so Grape refuses the change on an
	// applied config unless the person replaces the stack on purpose.
	// StackIdentityWhy is the template author's one-line reason.
	StackIdentity    bool
	StackIdentityWhy string

	defaults    *typeexpr.Defaults
	typeTokens  hclwrite.Tokens
	defTokens   hclwrite.Tokens
	validations []validation
}

// validation is a validation block of a variable, kept to be evaluated
// statically against an intent's values.
type validation struct {
	condition hcl.Expression
	message   hcl.Expression
	refs      []string // var.<name> it reads
	pos       string
}

// Output is a module output.
type Output struct {
	Name        string
	Description string
	Sensitive   bool
}

// Default returns the embedded template set. It is checked by the tests, so
// an error here means a broken build.
func Default() (*Catalog, error) {
	c, err := Load(templates.FS())
	if err != nil {
		return nil, fmt.Errorf("loading embedded templates: %w", err)
	}
	return c, nil
}

// LoadDir loads a template set from a directory (grape --templates DIR).
func LoadDir(dir string) (*Catalog, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("loading templates from %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("loading templates from %s: not a directory", dir)
	}
	c, err := Load(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("loading templates from %s: %w", dir, err)
	}
	return c, nil
}

// Load parses and checks a template set: a VERSION file and one directory per
// module. Hidden files and directories (".terraform", ".git") are ignored.
// Every problem found is reported, joined.
func Load(fsys fs.FS) (*Catalog, error) {
	files, err := readTemplateFiles(fsys)
	if err != nil {
		return nil, err
	}
	raw, ok := files[versionFile]
	if !ok {
		return nil, errors.New("template set has no VERSION file: add one holding the set's version, e.g. 1.0.0")
	}
	version := strings.TrimSpace(string(raw))
	if !versionRE.MatchString(version) {
		return nil, fmt.Errorf("template set VERSION %q is not a version: use letters, digits and . + _ - (at most 64), e.g. 1.0.0", truncate(version, 40))
	}
	c := &Catalog{Version: version, Digest: digestFiles(files), byName: map[string]*Module{}}
	if lock, ok := files[LockFile]; ok {
		if _, diags := hclsyntax.ParseConfig(lock, LockFile, hcl.InitialPos); diags.HasErrors() {
			return nil, fmt.Errorf("template set %s is not valid HCL: %s; regenerate it with `grape templates lock`", LockFile, diags.Error())
		}
		c.Lock = lock
	}

	byModule := map[string]map[string][]byte{}
	for p, b := range files {
		dir, rest, found := strings.Cut(p, "/")
		if !found {
			continue // top-level files other than VERSION are not part of any module
		}
		if byModule[dir] == nil {
			byModule[dir] = map[string][]byte{}
		}
		byModule[dir][rest] = b
	}
	if len(byModule) == 0 {
		return nil, errors.New("template set has no module directories")
	}
	if len(byModule) > maxModulesInTemplate {
		return nil, fmt.Errorf("template set has %d module directories; at most %d are supported", len(byModule), maxModulesInTemplate)
	}
	names := make([]string, 0, len(byModule))
	for n := range byModule {
		names = append(names, n)
	}
	sortModules(names)

	var errs []error
	for _, name := range names {
		if !moduleNameRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("module directory %q: name must be lowercase letters and digits, starting with a letter (at most 32)", name))
			continue
		}
		m, err := parseModule(name, byModule[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.modules = append(c.modules, m)
		c.byName[name] = m
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := c.attachWirings(); err != nil {
		return nil, err
	}
	return c, nil
}

func sortModules(names []string) {
	rank := func(n string) int {
		if i := slices.Index(knownOrder, n); i >= 0 {
			return i
		}
		return len(knownOrder)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, rj := rank(names[i]), rank(names[j])
		if ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
}

// readTemplateFiles reads every non-hidden regular file of the set, within
// the size limits.
func readTemplateFiles(fsys fs.FS) (map[string][]byte, error) {
	files := map[string][]byte{}
	total := 0
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading template set: %w", err)
		}
		if p == "." {
			return nil
		}
		base := path.Base(p)
		if strings.HasPrefix(base, ".") && p != LockFile {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !templateFileRE.MatchString(base) && p != LockFile {
			return fmt.Errorf("template set: file name %q is not allowed: use letters, digits and . _ - only", p)
		}
		if strings.Count(p, "/") >= maxTemplateDirDepth {
			return fmt.Errorf("template set: %s is nested deeper than %d directories", p, maxTemplateDirDepth)
		}
		switch {
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("template set: %s is not a regular file (symlinks and devices are not allowed)", p)
		}
		if !strings.Contains(p, "/") && p != versionFile && p != LockFile {
			return nil // top-level README, LICENSE, ...: not part of the set
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("template set: %s: %w", p, err)
		}
		if info.Size() > maxTemplateFileSize {
			return fmt.Errorf("template set: %s is %d bytes; the limit is %d", p, info.Size(), maxTemplateFileSize)
		}
		if len(files) >= maxTemplateFiles {
			return fmt.Errorf("template set has more than %d files", maxTemplateFiles)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("template set: reading %s: %w", p, err)
		}
		if len(b) > maxTemplateFileSize {
			return fmt.Errorf("template set: %s is %d bytes; the limit is %d", p, len(b), maxTemplateFileSize)
		}
		total += len(b)
		if total > maxTemplateSetSize {
			return fmt.Errorf("template set is larger than %d bytes", maxTemplateSetSize)
		}
		files[p] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// digestFiles hashes the set: each path with its length and bytes, in path
// order, so renaming or moving content changes the digest.
func digestFiles(files map[string][]byte) string {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	h := sha256.New()
	for _, p := range paths {
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(files[p]))
		h.Write(files[p])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "type"}, {Name: "default"}, {Name: "description"},
		{Name: "sensitive"}, {Name: "nullable"}, {Name: "ephemeral"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "condition", Required: true},
		{Name: "error_message", Required: true},
	},
}

var outputSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "value", Required: true}, {Name: "description"}, {Name: "sensitive"},
		{Name: "depends_on"}, {Name: "ephemeral"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "precondition"}},
}

// parseModule reads a module's variables and outputs from its top-level .tf
// files (nested directories are copied but, as in Terraform, not part of it).
func parseModule(name string, files map[string][]byte) (*Module, error) {
	m := &Module{Name: name, files: files}
	var tfFiles []string
	for p := range files {
		switch {
		case strings.Contains(p, "/"):
		case strings.HasSuffix(p, ".tf.json"):
			return nil, fmt.Errorf("module %s: %s: JSON configuration is not supported in templates; write it as .tf", name, p)
		case strings.HasSuffix(p, ".tf"):
			tfFiles = append(tfFiles, p)
		}
	}
	if len(tfFiles) == 0 {
		return nil, fmt.Errorf("module %s: no .tf files in %s/", name, name)
	}
	sort.Strings(tfFiles)
	m.Description = readmeSummary(files[moduleReadme])

	var errs []error
	seenVar, seenOut := map[string]string{}, map[string]string{}
	for _, f := range tfFiles {
		src := files[f]
		fname := name + "/" + f
		if !utf8.Valid(src) {
			errs = append(errs, fmt.Errorf("%s: not valid UTF-8", fname))
			continue
		}
		file, diags := hclsyntax.ParseConfig(src, fname, hcl.InitialPos)
		if diags.HasErrors() {
			errs = append(errs, fmt.Errorf("parsing %w", diags))
			continue
		}
		wfile, wdiags := hclwrite.ParseConfig(src, fname, hcl.InitialPos)
		if wdiags.HasErrors() {
			errs = append(errs, fmt.Errorf("parsing %w", wdiags))
			continue
		}
		directives, derrs := parseDirectives(src, fname)
		errs = append(errs, derrs...)
		body := file.Body.(*hclsyntax.Body)
		for _, blk := range body.Blocks {
			pos := fmt.Sprintf("%s:%d", fname, blk.DefRange().Start.Line)
			switch blk.Type {
			case "variable":
				if len(blk.Labels) != 1 {
					errs = append(errs, fmt.Errorf("%s: a variable block needs exactly one label", pos))
					continue
				}
				vname := blk.Labels[0]
				if prev, dup := seenVar[vname]; dup {
					errs = append(errs, fmt.Errorf("%s: variable %q is already declared at %s", pos, vname, prev))
					continue
				}
				seenVar[vname] = pos
				wblk := wfile.Body().FirstMatchingBlock("variable", []string{vname})
				d := directives[blk.DefRange().Start.Line-1]
				if d != nil {
					d.used = true
				}
				v, err := parseVariable(name, vname, pos, blk, wblk, src)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if d != nil {
					v.StackIdentity, v.StackIdentityWhy = true, d.why
				}
				m.Variables = append(m.Variables, *v)
			case "output":
				if len(blk.Labels) != 1 {
					errs = append(errs, fmt.Errorf("%s: an output block needs exactly one label", pos))
					continue
				}
				oname := blk.Labels[0]
				if prev, dup := seenOut[oname]; dup {
					errs = append(errs, fmt.Errorf("%s: output %q is already declared at %s", pos, oname, prev))
					continue
				}
				seenOut[oname] = pos
				o, err := parseOutput(oname, pos, blk)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				m.Outputs = append(m.Outputs, *o)
			case "provider":
				// Terraform refuses count on a module that configures
				// providers, and the root owns credentials and region.
				errs = append(errs, fmt.Errorf("%s: provider blocks are not allowed in a template module: the rendered root configures the provider", pos))
			case "terraform":
				for _, inner := range blk.Body.Blocks {
					if inner.Type == "backend" || inner.Type == "cloud" {
						errs = append(errs, fmt.Errorf("%s: a template module must not declare a %s: the rendered root does", pos, inner.Type))
					}
				}
			case "module":
				if err := checkModuleSource(pos, blk); err != nil {
					errs = append(errs, err)
				}
			}
		}
		errs = append(errs, unusedDirectives(directives)...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	return m, nil
}

// Directives are `# grape:<name>` comments in a template's .tf files.
// stackIdentityDirective marks the variable block on the next line as part
// of the stack's identity; the rest of the comment is the reason.
const (
	directivePrefix        = "grape:"
	stackIdentityDirective = "grape:stack-identity"
	maxDirectiveWhy        = 200
)

// directive is a `# grape:stack-identity <why>` comment of a .tf file.
type directive struct {
	pos  string
	why  string
	used bool
}

// parseDirectives finds the `# grape:` comments of a .tf file, by the line
// they are on. The lexer tells comments from strings (a heredoc line
// starting with "# grape:" is not a directive). A directive Grape does not
// know, or one without its reason, is an error: a typo must not silently
// leave an input unguarded.
func parseDirectives(src []byte, fname string) (map[int]*directive, []error) {
	tokens, _ := hclsyntax.LexConfig(src, fname, hcl.InitialPos)
	out := map[int]*directive{}
	var errs []error
	for _, tok := range tokens {
		if tok.Type != hclsyntax.TokenComment {
			continue
		}
		text := string(tok.Bytes)
		switch {
		case strings.HasPrefix(text, "#"):
			text = text[1:]
		case strings.HasPrefix(text, "//"):
			text = text[2:]
		default:
			continue // /* block */ comments carry no directives
		}
		text = strings.TrimSpace(text)
		if !strings.HasPrefix(text, directivePrefix) {
			continue
		}
		line := tok.Range.Start.Line
		pos := fmt.Sprintf("%s:%d", fname, line)
		name, why := text, ""
		if i := strings.IndexFunc(text, unicode.IsSpace); i >= 0 {
			name, why = text[:i], strings.TrimSpace(text[i:])
		}
		switch {
		case name != stackIdentityDirective:
			errs = append(errs, fmt.Errorf("%s: unknown directive %q: the only one is `# %s <why changing this input replaces the stack>`", pos, name, stackIdentityDirective))
		case why == "":
			errs = append(errs, fmt.Errorf("%s: `# %s` needs a reason after it on the same line, e.g. `# %s a new CIDR replaces the VPC and everything in it`", pos, stackIdentityDirective, stackIdentityDirective))
		case utf8.RuneCountInString(why) > maxDirectiveWhy:
			errs = append(errs, fmt.Errorf("%s: the reason of `# %s` is %d characters; keep it to one line of at most %d", pos, stackIdentityDirective, utf8.RuneCountInString(why), maxDirectiveWhy))
		default:
			out[line] = &directive{pos: pos, why: why}
		}
	}
	return out, errs
}

// unusedDirectives reports directives that are not on the line directly
// above a variable block: they would mark nothing.
func unusedDirectives(ds map[int]*directive) []error {
	lines := make([]int, 0, len(ds))
	for l, d := range ds {
		if !d.used {
			lines = append(lines, l)
		}
	}
	sort.Ints(lines)
	errs := make([]error, 0, len(lines))
	for _, l := range lines {
		errs = append(errs, fmt.Errorf("%s: `# %s` must be on the line directly above a variable block", ds[l].pos, stackIdentityDirective))
	}
	return errs
}

// checkModuleSource refuses nested module sources that point outside the
// module directory: only the module's own directory is copied into a rendering.
func checkModuleSource(pos string, blk *hclsyntax.Block) error {
	attr, ok := blk.Body.Attributes["source"]
	if !ok {
		return fmt.Errorf("%s: module block without source", pos)
	}
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() || v.Type() != cty.String || v.IsNull() {
		return fmt.Errorf("%s: module source must be a literal string", pos)
	}
	src := v.AsString()
	if strings.HasPrefix(src, "../") || strings.Contains(src, "/../") || src == ".." {
		return fmt.Errorf("%s: module source %q leaves the module directory; only ./ paths inside it are copied into a rendering", pos, src)
	}
	return nil
}

func parseVariable(module, name, pos string, blk *hclsyntax.Block, wblk *hclwrite.Block, src []byte) (*Variable, error) {
	if !identifierRE.MatchString(name) {
		return nil, fmt.Errorf("%s: variable name %q must be lowercase letters, digits and underscores, starting with a letter (at most 64)", pos, name)
	}
	if name == enabledKey {
		return nil, fmt.Errorf("%s: variable name %q is reserved: it switches a module on or off in the intent", pos, name)
	}
	content, diags := blk.Body.Content(variableSchema)
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: variable %q: %w", pos, name, diags)
	}
	v := &Variable{Name: name, Pos: pos, Type: cty.DynamicPseudoType, TypeExpr: "any", Nullable: true}
	if a, ok := content.Attributes["type"]; ok {
		ty, defs, diags := typeexpr.TypeConstraintWithDefaults(a.Expr)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s: variable %q: type: %w", pos, name, diags)
		}
		v.Type, v.defaults = ty, defs
		v.TypeExpr = string(a.Expr.Range().SliceBytes(src))
		v.typeTokens = wblk.Body().GetAttribute("type").Expr().BuildTokens(nil)
	}
	if a, ok := content.Attributes["description"]; ok {
		s, err := literalString(a.Expr)
		if err != nil {
			return nil, fmt.Errorf("%s: variable %q: description: %w", pos, name, err)
		}
		v.Description = s
	}
	for _, flag := range []struct {
		name string
		dst  *bool
	}{{"sensitive", &v.Sensitive}, {"nullable", &v.Nullable}} {
		a, ok := content.Attributes[flag.name]
		if !ok {
			continue
		}
		b, diags := a.Expr.Value(nil)
		if diags.HasErrors() || b.Type() != cty.Bool || b.IsNull() {
			return nil, fmt.Errorf("%s: variable %q: %s must be true or false", pos, name, flag.name)
		}
		*flag.dst = b.True()
	}
	if a, ok := content.Attributes["default"]; ok {
		val, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s: variable %q: default must be a literal value: %w", pos, name, diags)
		}
		if v.defaults != nil {
			val = v.defaults.Apply(val)
		}
		conv, err := convert.Convert(val, v.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: variable %q: default does not match type %s: %w", pos, name, v.TypeExpr, err)
		}
		if conv.IsNull() && !v.Nullable {
			return nil, fmt.Errorf("%s: variable %q: default is null but nullable = false", pos, name)
		}
		v.Default = &conv
		v.DefaultExpr = string(a.Expr.Range().SliceBytes(src))
		v.defTokens = wblk.Body().GetAttribute("default").Expr().BuildTokens(nil)
	} else {
		v.Required = true
	}
	for _, vb := range content.Blocks {
		vc, diags := vb.Body.Content(validationSchema)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s: variable %q: validation: %w", pos, name, diags)
		}
		val := validation{
			condition: vc.Attributes["condition"].Expr,
			message:   vc.Attributes["error_message"].Expr,
			pos:       fmt.Sprintf("%s/%s:%d", module, path.Base(vb.DefRange.Filename), vb.DefRange.Start.Line),
		}
		seen := map[string]bool{}
		for _, t := range val.condition.Variables() {
			if t.RootName() != "var" || len(t) < 2 {
				continue
			}
			if at, ok := t[1].(hcl.TraverseAttr); ok && !seen[at.Name] {
				seen[at.Name] = true
				val.refs = append(val.refs, at.Name)
			}
		}
		v.validations = append(v.validations, val)
	}
	return v, nil
}

func parseOutput(name, pos string, blk *hclsyntax.Block) (*Output, error) {
	if !identifierRE.MatchString(name) {
		return nil, fmt.Errorf("%s: output name %q must be lowercase letters, digits and underscores, starting with a letter (at most 64)", pos, name)
	}
	content, diags := blk.Body.Content(outputSchema)
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: output %q: %w", pos, name, diags)
	}
	o := &Output{Name: name}
	if a, ok := content.Attributes["description"]; ok {
		s, err := literalString(a.Expr)
		if err != nil {
			return nil, fmt.Errorf("%s: output %q: description: %w", pos, name, err)
		}
		o.Description = s
	}
	if a, ok := content.Attributes["sensitive"]; ok {
		b, diags := a.Expr.Value(nil)
		if diags.HasErrors() || b.Type() != cty.Bool || b.IsNull() {
			return nil, fmt.Errorf("%s: output %q: sensitive must be true or false", pos, name)
		}
		o.Sensitive = b.True()
	}
	return o, nil
}

func literalString(expr hcl.Expression) (string, error) {
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		return "", fmt.Errorf("must be a literal string: %w", diags)
	}
	if v.Type() != cty.String || v.IsNull() || !v.IsKnown() {
		return "", errors.New("must be a literal string")
	}
	return v.AsString(), nil
}

// readmeSummary is the first paragraph after the title of a README.
func readmeSummary(readme []byte) string {
	var para []string
	for _, line := range strings.Split(string(readme), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#"):
			if len(para) > 0 {
				return strings.Join(para, " ")
			}
		case line == "":
			if len(para) > 0 {
				return strings.Join(para, " ")
			}
		default:
			para = append(para, line)
		}
	}
	return strings.Join(para, " ")
}

// attachWirings marks the wired variables and checks that both ends exist.
func (c *Catalog) attachWirings() error {
	var errs []error
	for i := range wirings {
		w := wirings[i]
		to, from := c.byName[w.Module], c.byName[w.From]
		if to == nil || from == nil {
			continue
		}
		v := to.variable(w.Input)
		if v == nil {
			errs = append(errs, fmt.Errorf("module %s: Grape wires module.%s output %s into variable %q, which the module does not declare", w.Module, w.From, w.Output, w.Input))
			continue
		}
		if v.Sensitive {
			errs = append(errs, fmt.Errorf("module %s: variable %q is wired from module.%s and must not be sensitive", w.Module, w.Input, w.From))
		}
		if !slices.ContainsFunc(from.Outputs, func(o Output) bool { return o.Name == w.Output }) {
			errs = append(errs, fmt.Errorf("module %s: Grape wires its output %q into module.%s.%s, but the module does not declare it", w.From, w.Output, w.Module, w.Input))
			continue
		}
		v.Wiring = &wirings[i]
	}
	return errors.Join(errs...)
}

// Modules returns the modules in catalog order: vpc, eks, rds, karpenter,
// then any others a template set adds, alphabetically.
func (c *Catalog) Modules() []*Module { return slices.Clone(c.modules) }

// Module returns the named module.
func (c *Catalog) Module(name string) (*Module, bool) {
	m, ok := c.byName[name]
	return m, ok
}

// ModuleNames returns the module names in catalog order.
func (c *Catalog) ModuleNames() []string {
	names := make([]string, len(c.modules))
	for i, m := range c.modules {
		names[i] = m.Name
	}
	return names
}

// SensitiveVariables returns the root variable names (module_input) of every
// sensitive module input. Their values never come from the intent: the agent
// supplies them from its own environment as TF_VAR_<name>.
func (c *Catalog) SensitiveVariables() []string {
	var out []string
	for _, m := range c.modules {
		for _, v := range m.Variables {
			if v.Sensitive {
				out = append(out, rootVarName(m.Name, v.Name))
			}
		}
	}
	return out
}

func (m *Module) variable(name string) *Variable {
	for i := range m.Variables {
		if m.Variables[i].Name == name {
			return &m.Variables[i]
		}
	}
	return nil
}

// Variable returns the named input.
func (m *Module) Variable(name string) (Variable, bool) {
	if v := m.variable(name); v != nil {
		return *v, true
	}
	return Variable{}, false
}

// Files returns the module's files (paths relative to its directory) in path
// order.
func (m *Module) Files() []string {
	out := make([]string, 0, len(m.files))
	for p := range m.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// settable reports whether the intent may set the input: sensitive inputs
// come from the agent's environment instead.
func (v *Variable) settable() bool { return !v.Sensitive }

// DefaultString renders the default for people: its source text, "(required)"
// or, for wired inputs, where the value comes from.
func (v *Variable) DefaultString() string {
	switch {
	case v.Wiring != nil:
		return fmt.Sprintf("module.%s.%s", v.Wiring.From, v.Wiring.Output)
	case v.Default == nil:
		return "(required)"
	default:
		return oneLine(v.DefaultExpr)
	}
}

func rootVarName(module, input string) string { return module + "_" + input }

func oneLine(s string) string {
	fields := strings.Fields(s)
	out := strings.Join(fields, " ")
	out = strings.ReplaceAll(out, "( ", "(")
	out = strings.ReplaceAll(out, "{ ", "{")
	out = strings.ReplaceAll(out, " }", "}")
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// quoteKey renders a map key in a path: bare when it is an identifier,
// otherwise as a JSON string in brackets.
func quoteKey(k string) string {
	if identifierLike(k) {
		return k
	}
	return "[" + strconv.Quote(k) + "]"
}

func identifierLike(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case (r >= '0' && r <= '9') || r == '-':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// JoinPath extends a JSON path as validation errors spell it: "modules.vpc"
// + "cidr" → "modules.vpc.cidr"; keys that are not identifiers are quoted,
// ["a b"]. The portal uses it to place an error next to its field.
func JoinPath(base, key string) string {
	q := quoteKey(key)
	if base == "" {
		return q
	}
	if strings.HasPrefix(q, "[") {
		return base + q
	}
	return base + "." + q
}
