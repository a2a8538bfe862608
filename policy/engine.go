package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/grapehq/grape/redact"
)

// DefaultTimeout bounds one evaluation.
const DefaultTimeout = 10 * time.Second

// DefaultNamespace is conftest's default package.
const DefaultNamespace = "main"

// Options shape how policies are compiled and evaluated.
type Options struct {
	// Namespaces are the packages whose deny/violation/warn rules are
	// evaluated (conftest's --namespace); default ["main"]. The default
	// pack's packages (grape.defaults.*) are evaluated whatever this says.
	Namespaces []string
	// Timeout bounds each evaluation; default DefaultTimeout.
	Timeout time.Duration
	// RegoVersion is "v1" (default) or "v0" for policies in the syntax
	// before OPA 1.0 (conftest's --rego-version v0). Files that import
	// rego.v1 are v1 either way.
	RegoVersion string
}

func (o Options) withDefaults() Options {
	if len(o.Namespaces) == 0 {
		o.Namespaces = []string{DefaultNamespace}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.RegoVersion == "" {
		o.RegoVersion = "v1"
	}
	return o
}

func (o Options) regoVersion() (ast.RegoVersion, error) {
	switch o.RegoVersion {
	case "v1":
		return ast.RegoV1, nil
	case "v0":
		return ast.RegoV0, nil
	}
	return ast.RegoUndefined, fmt.Errorf("rego version %q: use v1 or v0", o.RegoVersion)
}

// unsafeBuiltins would let a policy send the plan out of the agent or read
// its environment (AWS credentials): they are left out of the compiler's
// capabilities, so a policy calling one does not compile.
var unsafeBuiltins = map[string]struct{}{
	"http.send":          {},
	"net.lookup_ip_addr": {},
	"opa.runtime":        {},
}

var (
	failureRule = regexp.MustCompile(`^(deny|violation)(_[a-zA-Z0-9]+)*$`)
	warnRule    = regexp.MustCompile(`^warn(_[a-zA-Z0-9]+)*$`)
)

// ruleKind says whether a rule name is one conftest evaluates.
func ruleKind(name string) (Kind, bool) {
	switch {
	case failureRule.MatchString(name) && strings.HasPrefix(name, "deny"):
		return KindDeny, true
	case failureRule.MatchString(name):
		return KindViolation, true
	case warnRule.MatchString(name):
		return KindWarn, true
	case name == "exception":
		return KindException, true
	}
	return "", false
}

// exceptionKey is the name a conftest exception lists for a rule: deny_x and
// violation_x are excepted as "x"; other names as themselves.
func exceptionKey(name string) string {
	for _, p := range []string{"deny_", "violation_"} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			return rest
		}
	}
	return name
}

// Rule is one definition of a rule the engine evaluates.
type Rule struct {
	Set     string `json:"set,omitempty"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Package string `json:"package"`
	Name    string `json:"name"`
	Kind    Kind   `json:"kind"`
	Default bool   `json:"default_pack,omitempty"`
}

// Engine holds compiled policy sets, ready to judge plans. It is safe for
// concurrent use.
type Engine struct {
	opts Options
	sets map[string]*compiledSet
}

type compiledSet struct {
	name    string
	digest  string
	files   []string
	targets []target // targets[i] is bound to query variable qvar(i)
	query   *rego.PreparedEvalQuery
}

type target struct {
	Rule
	exceptionKey string
}

func qvar(i int) string { return fmt.Sprintf("__grape_q%d", i) }

// Load collects the sources' files and compiles them.
func Load(ctx context.Context, src Sources, opts Options) (*Engine, error) {
	files, err := src.Collect(ctx)
	if err != nil {
		return nil, err
	}
	return Compile(ctx, files, opts)
}

// Compile parses and compiles every policy set once: the files outside
// sets/ alone (set ""), and each set with them. Test files are left out.
// A *CompileError names every file:line that is wrong.
func Compile(ctx context.Context, files []File, opts Options) (*Engine, error) {
	opts = opts.withDefaults()
	version, err := opts.regoVersion()
	if err != nil {
		return nil, err
	}
	for _, ns := range opts.Namespaces {
		if _, err := ast.ParseRef("data." + ns); err != nil {
			return nil, fmt.Errorf("policy namespace %q is not a package path (e.g. main, terraform.aws)", ns)
		}
	}
	parsed, problems := parseFiles(files, version)
	if len(problems) > 0 {
		return nil, &CompileError{Problems: problems}
	}
	bySet := map[string][]*parsedFile{"": nil}
	for _, pf := range parsed {
		if pf.file.Set != "" {
			bySet[pf.file.Set] = append(bySet[pf.file.Set], pf)
		}
	}
	for name := range bySet {
		if name == "" {
			continue
		}
		for _, pf := range parsed {
			if pf.file.Set == "" {
				bySet[name] = append(bySet[name], pf)
			}
		}
	}
	for _, pf := range parsed {
		if pf.file.Set == "" {
			bySet[""] = append(bySet[""], pf)
		}
	}
	e := &Engine{opts: opts, sets: map[string]*compiledSet{}}
	seen := map[string]bool{}
	for _, name := range sortedKeys(bySet) {
		cs, probs := compileSet(ctx, name, bySet[name], opts, version)
		for _, p := range probs {
			if k := p.String(); !seen[k] {
				seen[k] = true
				problems = append(problems, p)
			}
		}
		e.sets[name] = cs
	}
	if len(problems) > 0 {
		return nil, &CompileError{Problems: problems}
	}
	return e, nil
}

type parsedFile struct {
	file   File
	module *ast.Module
}

func parseFiles(files []File, version ast.RegoVersion) ([]*parsedFile, []Problem) {
	var out []*parsedFile
	var problems []Problem
	names := map[string]bool{}
	for _, f := range files {
		if f.Test {
			continue
		}
		if names[f.Name] {
			problems = append(problems, Problem{File: f.Name, Code: "grape_duplicate_file", Msg: "the same file is loaded twice"})
			continue
		}
		names[f.Name] = true
		m, err := ast.ParseModuleWithOpts(f.Name, string(f.Data), ast.ParserOptions{RegoVersion: version, ProcessAnnotation: true})
		if err != nil {
			problems = append(problems, astProblems(f.Name, err)...)
			continue
		}
		if m == nil {
			problems = append(problems, Problem{File: f.Name, Code: "rego_parse_error", Msg: "empty module: a policy file needs a package"})
			continue
		}
		out = append(out, &parsedFile{file: f, module: m})
	}
	return out, problems
}

// astProblems turns parser or compiler errors into problems.
func astProblems(file string, err error) []Problem {
	var errs ast.Errors
	var one *ast.Error
	switch {
	case errors.As(err, &errs):
	case errors.As(err, &one):
		errs = ast.Errors{one}
	default:
		return []Problem{{File: file, Code: "rego_error", Msg: err.Error()}}
	}
	var out []Problem
	for _, e := range errs {
		p := Problem{File: file, Code: e.Code, Msg: refusedBuiltin(e.Message)}
		if e.Location != nil {
			if e.Location.File != "" {
				p.File = e.Location.File
			}
			p.Line = e.Location.Row
		}
		out = append(out, p)
	}
	return out
}

// refusedBuiltin words the compiler's "undefined function" for a builtin
// Grape leaves out on purpose, so the author learns it is refused, and why.
func refusedBuiltin(msg string) string {
	name, ok := strings.CutPrefix(msg, "undefined function ")
	if _, unsafe := unsafeBuiltins[name]; !ok || !unsafe {
		return msg
	}
	return name + " is not allowed in Grape policies: it could send the plan out of the agent or read its environment (credentials)"
}

// compileSet compiles one set. Each deny/violation/warn rule definition in
// scope gets a private copy named after its position, so every message is
// traced to the file and line that produced it, and one prepared query
// reads every copy in a single evaluation.
func compileSet(ctx context.Context, name string, files []*parsedFile, opts Options, version ast.RegoVersion) (*compiledSet, []Problem) {
	cs := &compiledSet{name: name, digest: digest(files)}
	modules := make(map[string]*ast.Module, len(files))
	defaultPkgs := map[string]bool{}
	for _, pf := range files {
		modules[pf.file.Name] = pf.module.Copy()
		cs.files = append(cs.files, pf.file.Name)
		if pf.file.Default {
			defaultPkgs[pf.module.Package.Path.String()] = true
		}
	}
	sort.Strings(cs.files)
	inScope := map[string]bool{}
	for _, ns := range opts.Namespaces {
		inScope["data."+ns] = true
	}
	for p := range defaultPkgs {
		inScope[p] = true
	}
	defaultFile := map[string]bool{}
	for _, pf := range files {
		defaultFile[pf.file.Name] = pf.file.Default
	}

	var problems []Problem
	var body ast.Body
	exceptionPkgs := map[string]bool{}
	for _, file := range cs.files {
		mod := modules[file]
		pkg := mod.Package.Path.String()
		if !inScope[pkg] {
			continue
		}
		shownPkg := strings.TrimPrefix(pkg, "data.")
		rules := mod.Rules
		for _, rule := range rules {
			ref := rule.Head.Ref()
			if len(rule.Head.Args) > 0 {
				continue // a function
			}
			rname := ref[0].Value.String()
			kind, ok := ruleKind(rname)
			if !ok {
				continue
			}
			line := 0
			if rule.Location != nil {
				line = rule.Location.Row
			}
			// deny[msg] if … (an object keyed by message in Rego v1), deny :=
			// true, deny.x contains …: conftest would read none of them as
			// messages, so they would never fire.
			if len(ref) != 1 || rule.Head.RuleKind() != ast.MultiValue {
				problems = append(problems, Problem{File: file, Line: line, Code: "grape_rule_shape",
					Msg: fmt.Sprintf("%s in package %s must be a set of messages, as conftest reads it: write `%s contains msg if { … }`", rname, shownPkg, rname)})
				continue
			}
			if kind == KindException {
				if !exceptionPkgs[pkg] {
					exceptionPkgs[pkg] = true
					i := len(cs.targets)
					cs.targets = append(cs.targets, target{Rule: Rule{Set: name, File: file, Line: line, Package: shownPkg, Name: rname, Kind: kind, Default: defaultFile[file]}})
					body = append(body, ast.Equality.Expr(ast.VarTerm(qvar(i)), ast.NewTerm(mod.Package.Path.Copy().Append(ast.StringTerm(rname)))))
				}
				continue
			}
			i := len(cs.targets)
			copyName := fmt.Sprintf("__grape_rule%d", i)
			cp := rule.Copy()
			cp.Annotations = nil
			cp.Head.Name = ast.Var(copyName)
			cp.Head.SetRef(ast.Ref{ast.VarTerm(copyName)})
			mod.Rules = append(mod.Rules, cp)
			cs.targets = append(cs.targets, target{
				Rule:         Rule{Set: name, File: file, Line: line, Package: shownPkg, Name: rname, Kind: kind, Default: defaultFile[file]},
				exceptionKey: exceptionKey(rname),
			})
			body = append(body, ast.Equality.Expr(ast.VarTerm(qvar(i)), ast.NewTerm(mod.Package.Path.Copy().Append(ast.StringTerm(copyName)))))
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	c := newCompiler(version)
	c.Compile(modules)
	if c.Failed() {
		return nil, astProblems("", c.Errors)
	}
	if len(body) == 0 {
		return cs, nil
	}
	pq, err := rego.New(
		rego.Compiler(c),
		rego.ParsedQuery(body),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, astProblems("", err)
	}
	cs.query = &pq
	return cs, nil
}

// newCompiler is the compiler every Grape policy is compiled with, in the
// agent and in `grape policy test` alike.
func newCompiler(version ast.RegoVersion) *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithEnablePrintStatements(false).
		WithDefaultRegoVersion(version)
}

// capabilities are this OPA's, without the unsafe builtins.
func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		_, unsafe := unsafeBuiltins[b.Name]
		return unsafe
	})
	return c
}

// digest hashes a set's files: each path relative to its source with its
// length and bytes, sorted by path (then content), as the template digest.
func digest(files []*parsedFile) string {
	sorted := append([]*parsedFile(nil), files...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].file.Path != sorted[j].file.Path {
			return sorted[i].file.Path < sorted[j].file.Path
		}
		return string(sorted[i].file.Data) < string(sorted[j].file.Data)
	})
	h := sha256.New()
	for _, pf := range sorted {
		fmt.Fprintf(h, "%s\x00%d\x00", pf.file.Path, len(pf.file.Data))
		h.Write(pf.file.Data)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Sets names the policy sets ("" is the files outside sets/, always there).
func (e *Engine) Sets() []string { return sortedKeys(e.sets) }

// Digest is the digest of a set's files.
func (e *Engine) Digest(set string) (string, error) {
	cs, ok := e.sets[set]
	if !ok {
		return "", e.unknownSet(set)
	}
	return cs.digest, nil
}

// Files lists a set's files by their shown names.
func (e *Engine) Files(set string) []string {
	if cs, ok := e.sets[set]; ok {
		return append([]string(nil), cs.files...)
	}
	return nil
}

// Rules lists the rule definitions a set evaluates, by file and line.
func (e *Engine) Rules(set string) []Rule {
	cs, ok := e.sets[set]
	if !ok {
		return nil
	}
	out := make([]Rule, 0, len(cs.targets))
	for _, t := range cs.targets {
		out = append(out, t.Rule)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out
}

// Timeout is the bound of one evaluation.
func (e *Engine) Timeout() time.Duration { return e.opts.Timeout }

func (e *Engine) unknownSet(set string) error {
	var known []string
	for _, s := range e.Sets() {
		if s != "" {
			known = append(known, s)
		}
	}
	return &UnknownSetError{Set: set, Known: known}
}

// Input is one plan to judge.
type Input struct {
	// Set is the config's policy set ("" for none).
	Set string
	// Plan is the output of terraform show -json. It stays in memory and
	// is never part of the result.
	Plan  []byte
	Grape Meta
	// Redact is applied to every message and error after the plan's own
	// sensitive values are masked and before messages are cut to length.
	// The agent passes its log redactor (environment secrets, sensitive
	// TF_VAR_* values): a message may quote anything the plan holds.
	Redact func(string) string
}

// Evaluate judges a plan. An evaluation that cannot complete returns an
// *EvalError (an unknown set an *UnknownSetError); the engine never panics
// out of Evaluate.
func (e *Engine) Evaluate(ctx context.Context, in Input) (res *Result, err error) {
	cs, ok := e.sets[in.Set]
	if !ok {
		return nil, e.unknownSet(in.Set)
	}
	start := time.Now()
	value, secrets, err := buildInput(in.Plan, in.Grape)
	if err != nil {
		return nil, err
	}
	masker := redact.New(0, secrets...)
	clean := func(s string) string {
		s = masker.Redact(s)
		if in.Redact != nil {
			s = in.Redact(s)
		}
		return s
	}
	res = &Result{Digest: cs.digest, Set: in.Set, Rules: len(cs.targets)}
	if cs.query == nil {
		res.finish()
		res.TookMS = time.Since(start).Milliseconds()
		return res, nil
	}
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, &EvalError{Reason: ReasonInternal, Msg: clean(fmt.Sprintf("the policy engine failed: %v", p))}
		}
	}()
	ectx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	rs, err := cs.query.Eval(ectx, rego.EvalParsedInput(value))
	if err != nil {
		return nil, e.evalError(ctx, err, clean)
	}
	if len(rs) != 1 {
		// Sets are always defined; anything else would silently pass.
		return nil, &EvalError{Reason: ReasonInternal, Msg: fmt.Sprintf("the policies' query returned %d results, want 1", len(rs))}
	}
	if err := cs.collect(rs[0].Bindings, res, clean); err != nil {
		return nil, err
	}
	res.finish()
	res.TookMS = time.Since(start).Milliseconds()
	return res, nil
}

func (e *Engine) evalError(ctx context.Context, err error, clean func(string) string) error {
	if topdown.IsCancel(err) {
		if ctx.Err() != nil {
			return &EvalError{Reason: ReasonCancelled, Msg: "was cancelled", Err: context.Cause(ctx)}
		}
		return &EvalError{Reason: ReasonTimeout, Msg: fmt.Sprintf("did not finish within %s (--policy-timeout): a rule loops over too much, e.g. nested iterations over every resource", e.opts.Timeout), Err: err}
	}
	reason := ReasonInternal
	var te *topdown.Error
	if errors.As(err, &te) {
		switch te.Code {
		case topdown.ConflictErr:
			reason = ReasonConflict
		case topdown.BuiltinErr:
			reason = ReasonBuiltin
		case topdown.TypeErr:
			reason = ReasonType
		}
	}
	return &EvalError{Reason: reason, Msg: clean(oneLine(err.Error())), Err: errors.New(clean(err.Error()))}
}

// collect turns the query's bindings into verdicts, applying exceptions.
func (cs *compiledSet) collect(b rego.Vars, res *Result, clean func(string) string) error {
	excepted := map[string]map[string]bool{} // package → keys
	for i, t := range cs.targets {
		if t.Kind != KindException {
			continue
		}
		keys := map[string]bool{}
		for _, entry := range asList(b[qvar(i)]) {
			for _, k := range asList(entry) {
				if s, ok := k.(string); ok {
					keys[s] = true
				}
			}
		}
		excepted[t.Package] = keys
	}
	dropped := map[[2]string]int{}
	for i, t := range cs.targets {
		if t.Kind == KindException {
			continue
		}
		values, ok := b[qvar(i)].([]any)
		if !ok {
			return &EvalError{Reason: ReasonMessage, Msg: fmt.Sprintf("%s:%d: %s did not evaluate to a set", t.File, t.Line, t.Name)}
		}
		for _, v := range values {
			msg, err := message(v)
			if err != nil {
				return &EvalError{Reason: ReasonMessage, Msg: fmt.Sprintf("%s:%d: %s: %s", t.File, t.Line, t.Name, err)}
			}
			if excepted[t.Package][t.exceptionKey] {
				dropped[[2]string{t.Package, t.Name}]++
				continue
			}
			res.Verdicts = append(res.Verdicts, Verdict{
				Kind: t.Kind, Rule: t.Name, Package: t.Package, File: t.File, Line: t.Line,
				Msg: cut(clean(msg), maxMessageLen),
			})
		}
	}
	for k, n := range dropped {
		res.Exceptions = append(res.Exceptions, Exception{Package: k[0], Rule: k[1], Dropped: n})
	}
	sort.Slice(res.Exceptions, func(i, j int) bool {
		a, b := res.Exceptions[i], res.Exceptions[j]
		return a.Package+"."+a.Rule < b.Package+"."+b.Rule
	})
	return nil
}

// message reads a conftest message: a string, or an object with a string
// msg. The error names the shape, never the value (it may be plan data).
func message(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case map[string]any:
		msg, ok := x["msg"].(string)
		if !ok {
			return "", errors.New(`an object message needs a string "msg" key`)
		}
		return msg, nil
	}
	return "", fmt.Errorf("a message must be a string or an object with a string \"msg\", not %s", shape(v))
}

func shape(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case string:
		return "a string"
	}
	return "a number"
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
