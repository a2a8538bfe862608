package policy

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestResult is the outcome of one Rego test (a test_ rule).
type TestResult struct {
	File     string        `json:"file"`
	Line     int           `json:"line"`
	Package  string        `json:"package"`
	Name     string        `json:"name"`
	Pass     bool          `json:"pass"`
	Skip     bool          `json:"skip,omitempty"`
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Output is what the test printed (print() works in tests).
	Output string `json:"output,omitempty"`
}

// RunTests runs the tests among files (*_test.rego) against all the files,
// with OPA's tester and the compiler settings the agent uses (so a test
// cannot pass on a builtin the agent refuses), except that print works.
// Each test is bounded by opts.Timeout. A file that does not compile is a
// *CompileError.
func RunTests(ctx context.Context, files []File, opts Options) ([]TestResult, error) {
	opts = opts.withDefaults()
	version, err := opts.regoVersion()
	if err != nil {
		return nil, err
	}
	modules := map[string]*ast.Module{}
	var problems []Problem
	for _, f := range files {
		m, err := ast.ParseModuleWithOpts(f.Name, string(f.Data), ast.ParserOptions{RegoVersion: version, ProcessAnnotation: true})
		if err != nil {
			problems = append(problems, astProblems(f.Name, err)...)
			continue
		}
		if m != nil {
			modules[f.Name] = m
		}
	}
	if len(problems) > 0 {
		return nil, &CompileError{Problems: problems}
	}
	runner := tester.NewRunner().
		SetCompiler(newCompiler(version).WithEnablePrintStatements(true)).
		SetModules(modules).
		SetTimeout(opts.Timeout).
		RaiseBuiltinErrors(true).
		CapturePrintOutput(true)
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return nil, &CompileError{Problems: astProblems("", err)}
	}
	var out []TestResult
	for r := range ch {
		tr := TestResult{Package: strings.TrimPrefix(r.Package, "data."), Name: r.Name, Pass: r.Pass(), Skip: r.Skip, Duration: r.Duration, Output: string(r.Output)}
		if r.Location != nil {
			tr.File, tr.Line = r.Location.File, r.Location.Row
		}
		switch {
		case r.Error != nil:
			tr.Error = oneLine(r.Error.Error())
		case r.Fail:
			tr.Error = "failed"
			if r.FailedAt != nil {
				tr.Error = fmt.Sprintf("failed at %s", oneLine(r.FailedAt.String()))
			}
		}
		out = append(out, tr)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out, nil
}
