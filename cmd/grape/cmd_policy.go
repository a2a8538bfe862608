package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/grapehq/grape/policy"
	"github.com/grapehq/grape/redact"
)

// policyFlags select the policies plans are judged by: directories, a git
// repository, and the default pack. The agent and `grape policy list|eval`
// register the same flags, so list shows what an agent with the same
// settings (flags, GRAPE_* variables, config file) loads.
type policyFlags struct {
	dirs        stringList
	gitURL      string
	gitRef      string
	namespaces  stringList
	timeout     time.Duration
	defaultPack bool
	regoVersion string
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	fs.Var(&p.dirs, "policy-dir", "directory of .rego policies, read recursively (repeatable, or a comma-separated list); sets/<name>/ holds policy sets")
	fs.StringVar(&p.gitURL, "policy-git", "", "git repository of .rego policies (url//subdir allowed), fetched like --templates-git")
	fs.StringVar(&p.gitRef, "policy-ref", "main", "branch, tag or commit of --policy-git")
	fs.Var(&p.namespaces, "policy-namespace", "package whose deny, violation and warn rules judge plans (repeatable; default main, as conftest)")
	fs.DurationVar(&p.timeout, "policy-timeout", policy.DefaultTimeout, "bound on one plan's policy evaluation; past it the deployment fails with kind policy")
	fs.BoolVar(&p.defaultPack, "default-policies", true, "judge plans with Grape's default policy pack too (docs/policy.md); --default-policies=false turns it off")
	fs.StringVar(&p.regoVersion, "policy-rego-version", "v1", "Rego syntax of the policies: v1, or v0 for policies written before OPA 1.0")
}

func (p *policyFlags) validate() error {
	switch {
	case p.timeout <= 0:
		return usagef("--policy-timeout: want more than 0, got %s", p.timeout)
	case p.regoVersion != "v1" && p.regoVersion != "v0":
		return usagef("--policy-rego-version: want v1 or v0, got %q", p.regoVersion)
	case p.gitURL == "" && p.gitRef != "main" && p.gitRef != "":
		return usagef("--policy-ref needs --policy-git")
	}
	return nil
}

func (p *policyFlags) sources(cacheDir string) policy.Sources {
	return policy.Sources{Dirs: p.dirs, GitURL: p.gitURL, GitRef: p.gitRef, CacheDir: cacheDir, DefaultPack: p.defaultPack}
}

func (p *policyFlags) options() policy.Options {
	return policy.Options{Namespaces: p.namespaces, Timeout: p.timeout, RegoVersion: p.regoVersion}
}

// engine loads and compiles the selected policies. cacheDir keeps a git
// checkout between runs ("" for a throwaway one). A policy that does not
// compile is an error naming file:line: an agent refuses to start with it.
func (p *policyFlags) engine(ctx context.Context, cacheDir string) (*policy.Engine, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	if p.gitURL != "" && cacheDir == "" {
		dir, err := os.MkdirTemp("", "grape-policies-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cacheDir = dir
	}
	e, err := policy.Load(ctx, p.sources(cacheDir), p.options())
	if err != nil {
		return nil, fmt.Errorf("loading policies: %w", err)
	}
	return e, nil
}

// stringList is a repeatable flag; each value may also be a comma-separated
// list (how a GRAPE_* variable or the config file gives several).
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func init() {
	register(&command{name: "policy", summary: "policies on plans: run their tests, judge a saved plan, list the rules (test, eval, list)"})
	register(&command{
		name:    "policy test",
		args:    "[DIR…]",
		summary: "run the *_test.rego tests of policy directories (the default pack's when none is given)",
		long: `Runs every test_ rule with OPA's tester, compiled as the agent compiles
policies (http.send, net.lookup_ip_addr and opa.runtime are refused; builtin
errors are errors), except that print() works. Exit status 1 when a test fails.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var verbose bool
			var regoVersion string
			var timeout time.Duration
			fs.BoolVar(&verbose, "v", false, "list passing tests too, with their print output")
			fs.StringVar(&regoVersion, "policy-rego-version", "v1", "Rego syntax of the policies: v1, or v0")
			fs.DurationVar(&timeout, "policy-timeout", policy.DefaultTimeout, "bound on each test")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				src := policy.Sources{Dirs: args, DefaultPack: len(args) == 0}
				files, err := src.Collect(ctx)
				if err != nil {
					return err
				}
				results, err := policy.RunTests(ctx, files, policy.Options{RegoVersion: regoVersion, Timeout: timeout})
				if err != nil {
					return err
				}
				return reportTests(cio.stdout, results, verbose)
			}
		},
	})
	register(&command{
		name:    "policy eval",
		summary: "judge a saved plan (terraform show -json) with the policies, as the agent would",
		long: `Prints each verdict: FAIL for deny and violation (the agent fails the
deployment), WARN for warn (the agent asks a person to approve). Exit status 1
when a policy denies, 0 otherwise. --cluster, --config, --action and --intent
fill input.grape as the agent does; without them Grape's tag policy only
checks the tags the intent would add. Sensitive values of the plan are masked
in messages.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var pf policyFlags
			var planFile, set, intentFile string
			var meta policy.Meta
			var asJSON bool
			pf.register(fs)
			fs.StringVar(&planFile, "plan-json", "", "the plan as JSON: terraform show -json PLANFILE > plan.json (- for stdin)")
			fs.StringVar(&set, "policy-set", "", "judge as a config of this policy set (sets/<name>/)")
			fs.StringVar(&meta.Cluster, "cluster", "", "input.grape.cluster")
			fs.StringVar(&meta.Config, "config", "", "input.grape.config")
			fs.StringVar(&meta.Action, "action", "apply", "input.grape.action: plan, apply or destroy")
			fs.StringVar(&intentFile, "intent", "", "intent JSON file: input.grape.intent")
			fs.BoolVar(&asJSON, "json", false, "print the result as JSON (what the agent stores on the deployment)")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if planFile == "" {
					return usagef("--plan-json FILE is required (terraform show -json PLANFILE > FILE)")
				}
				plan, err := readInput(planFile, cio.stdin)
				if err != nil {
					return fmt.Errorf("reading --plan-json: %w", err)
				}
				if intentFile != "" {
					if meta.Intent, err = readSpec(intentFile, cio.stdin); err != nil {
						return err
					}
				}
				meta.PolicySet = set
				e, err := pf.engine(ctx, "")
				if err != nil {
					return err
				}
				res, err := e.Evaluate(ctx, policy.Input{Set: set, Plan: plan, Grape: meta, Redact: redact.FromEnviron(os.Environ(), nil).Redact})
				if err != nil {
					return err
				}
				if asJSON {
					if err := writeJSON(cio.stdout, res); err != nil {
						return err
					}
				} else {
					writeVerdicts(cio.stdout, res)
				}
				if res.Denied() {
					return exitError{code: 1}
				}
				return nil
			}
		},
	})
	register(&command{
		name:    "policy list",
		summary: "list the policy files and rules an agent with these settings loads",
		long: `Loads and compiles the policies exactly as the agent does at start-up (same
flags, GRAPE_* variables and config file keys), so a policy that does not
compile fails here with the same file:line.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var pf policyFlags
			var asJSON bool
			pf.register(fs)
			fs.BoolVar(&asJSON, "json", false, "print JSON")
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				e, err := pf.engine(ctx, "")
				if err != nil {
					return err
				}
				type setInfo struct {
					Name   string        `json:"name"`
					Digest string        `json:"digest"`
					Files  []string      `json:"files"`
					Rules  []policy.Rule `json:"rules"`
				}
				var sets []setInfo
				for _, name := range e.Sets() {
					d, _ := e.Digest(name)
					sets = append(sets, setInfo{Name: name, Digest: d, Files: e.Files(name), Rules: e.Rules(name)})
				}
				if asJSON {
					return writeJSON(cio.stdout, sets)
				}
				for i, s := range sets {
					if i > 0 {
						fmt.Fprintln(cio.stdout)
					}
					title := "every config"
					if s.Name != "" {
						title = "policy set " + s.Name
					}
					fmt.Fprintf(cio.stdout, "%s: %d files, %d rules, %s\n", title, len(s.Files), len(s.Rules), s.Digest)
					tw := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "FILE\tPACKAGE\tRULE\tKIND")
					for _, r := range s.Rules {
						fmt.Fprintf(tw, "%s:%d\t%s\t%s\t%s\n", r.File, r.Line, r.Package, r.Name, r.Kind)
					}
					if err := tw.Flush(); err != nil {
						return err
					}
				}
				return nil
			}
		},
	})
}

func readInput(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(path)
}

// writeVerdicts prints a result the way conftest prints its findings.
func writeVerdicts(w io.Writer, r *policy.Result) {
	for _, v := range r.Verdicts {
		label := "FAIL"
		if v.Kind == policy.KindWarn {
			label = "WARN"
		}
		fmt.Fprintf(w, "%s - %s:%d - %s\n", label, v.File, v.Line, v.Msg)
	}
	if r.Omitted > 0 {
		fmt.Fprintf(w, "… and %d more (the first %d are kept)\n", r.Omitted, len(r.Verdicts))
	}
	for _, x := range r.Exceptions {
		fmt.Fprintf(w, "EXCEPTION - %s.%s - %d messages dropped\n", x.Package, x.Rule, x.Dropped)
	}
	set := ""
	if r.Set != "" {
		set = ", set " + r.Set
	}
	fmt.Fprintf(w, "%d rules: %d failures, %d warnings, %d exceptions (policies %s%s)\n", r.Rules, r.Denies, r.Warnings, len(r.Exceptions), r.Digest, set)
}

func reportTests(w io.Writer, results []policy.TestResult, verbose bool) error {
	failed := 0
	for _, r := range results {
		switch {
		case r.Skip:
			if verbose {
				fmt.Fprintf(w, "SKIP %s:%d %s.%s\n", r.File, r.Line, r.Package, r.Name)
			}
		case r.Pass:
			if verbose {
				fmt.Fprintf(w, "PASS %s:%d %s.%s (%s)\n", r.File, r.Line, r.Package, r.Name, r.Duration.Round(time.Microsecond))
				printIndented(w, r.Output)
			}
		default:
			failed++
			fmt.Fprintf(w, "FAIL %s:%d %s.%s: %s\n", r.File, r.Line, r.Package, r.Name, r.Error)
			printIndented(w, r.Output)
		}
	}
	if len(results) == 0 {
		fmt.Fprintln(w, "no tests found: tests are test_ rules in *_test.rego files")
		return exitError{code: 1}
	}
	fmt.Fprintf(w, "PASS: %d/%d\n", len(results)-failed, len(results))
	if failed > 0 {
		return exitError{code: 1}
	}
	return nil
}

func printIndented(w io.Writer, s string) {
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if line != "" {
			fmt.Fprintf(w, "    %s\n", line)
		}
	}
}

// printPolicy adds a deployment's policy verdicts to `grape status`.
func printPolicy(row func(string, any), raw json.RawMessage) {
	if len(raw) == 0 {
		return
	}
	var r policy.Result
	if err := json.Unmarshal(raw, &r); err != nil {
		row("policy", "unreadable verdicts: "+err.Error())
		return
	}
	switch {
	case r.Error != "":
		row("policy", fmt.Sprintf("evaluation failed (policies %s): %s", r.Digest, r.Error))
	default:
		row("policy", fmt.Sprintf("%d failures, %d warnings (%d rules; policies %s)", r.Denies, r.Warnings, r.Rules, r.Digest))
	}
	for _, v := range r.Verdicts {
		row("  "+string(v.Kind), fmt.Sprintf("%s (%s:%d)", v.Msg, v.File, v.Line))
	}
	if r.Omitted > 0 {
		row("  …", fmt.Sprintf("%d more (grape status --json)", r.Omitted))
	}
}
