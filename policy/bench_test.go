package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/stretchr/testify/require"
)

// Evaluations timed per b.N iteration for the percentiles (make bench runs
// one iteration).
const benchSamples = 60

// BenchmarkPolicyCompile: compiling the default pack, once per agent start.
func BenchmarkPolicyCompile(b *testing.B) {
	files, err := Sources{DefaultPack: true}.Collect(context.Background())
	require.NoError(b, err)
	for i := 0; i < b.N; i++ {
		d := sample(b, 20, func() {
			_, err := Compile(context.Background(), files, Options{})
			require.NoError(b, err)
		})
		b.ReportMetric(ms(d[len(d)/2]), "p50-ms")
	}
}

// BenchmarkPolicyEval: the default pack on a real 4-module plan (54
// resource changes, target ≤ 50 ms p50) and on a synthetic 1,000-resource
// plan made of the same resources (target ≤ 500 ms p50). The whole of
// Evaluate is timed — decoding the plan, collecting its sensitive values,
// the query, masking messages — and compared with the bare OPA query on the
// same compiled rules and input (what `opa eval` does in process).
func BenchmarkPolicyEval(b *testing.B) {
	real := readFixture(b, "plan-all-modules.json")
	meta := Meta{Cluster: "eu-1", Config: "all-modules", Action: "apply", Intent: fixtureIntent(b, "all-modules.json")}
	for _, tc := range []struct {
		name    string
		plan    []byte
		samples int
	}{
		{"real-4-modules", real, benchSamples},
		{"synthetic-1000", synthetic(b, real, 1000), benchSamples / 2},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := defaultEngine(b, Options{})
			bare := bareQuery(b, tc.plan, meta)
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				var res *Result
				cpu0 := cpuTime()
				grape := sample(b, tc.samples, func() {
					var err error
					res, err = e.Evaluate(ctx, Input{Plan: tc.plan, Grape: meta})
					require.NoError(b, err)
				})
				cpu := (cpuTime() - cpu0) / time.Duration(tc.samples)
				require.Empty(b, res.Verdicts, "the benchmark plans are compliant")
				opa := sample(b, tc.samples, bare)
				b.ReportMetric(ms(grape[len(grape)/2]), "p50-ms")
				b.ReportMetric(ms(grape[len(grape)*9/10]), "p90-ms")
				b.ReportMetric(ms(cpu), "cpu-ms/eval")
				b.ReportMetric(ms(opa[len(opa)/2]), "opa-p50-ms")
				b.ReportMetric(float64(grape[len(grape)/2])/float64(opa[len(opa)/2]), "x-opa")
			}
		})
	}
}

// bareQuery compiles the default pack as plain OPA and returns one
// evaluation of its rules on the plan, the input given as decoded JSON.
func bareQuery(b *testing.B, plan []byte, meta Meta) func() {
	files, err := Sources{DefaultPack: true}.Collect(context.Background())
	require.NoError(b, err)
	modules := map[string]*ast.Module{}
	for _, f := range files {
		if !f.Test {
			modules[f.Name] = ast.MustParseModuleWithOpts(string(f.Data), ast.ParserOptions{RegoVersion: ast.RegoV1})
		}
	}
	c := newCompiler(ast.RegoV1)
	c.Compile(modules)
	require.False(b, c.Failed(), "%v", c.Errors)
	pq, err := rego.New(rego.Compiler(c), rego.Query(`a = data.grape.defaults.rds.deny_public
b = data.grape.defaults.rds.deny_unencrypted
c = data.grape.defaults.network.deny_admin_port_open
d = data.grape.defaults.approval.warn_protected_delete
e = data.grape.defaults.tags.deny_missing_tags`)).PrepareForEval(context.Background())
	require.NoError(b, err)
	mb, err := json.Marshal(meta)
	require.NoError(b, err)
	return func() {
		var in map[string]any
		require.NoError(b, json.Unmarshal(plan, &in))
		var g any
		require.NoError(b, json.Unmarshal(mb, &g))
		in["grape"] = g
		rs, err := pq.Eval(context.Background(), rego.EvalInput(in))
		require.NoError(b, err)
		require.Len(b, rs, 1)
	}
}

// synthetic repeats the plan's resource changes, renamed, up to n.
func synthetic(b testing.TB, plan []byte, n int) []byte {
	var p map[string]any
	require.NoError(b, json.Unmarshal(plan, &p))
	src := p["resource_changes"].([]any)
	out := make([]any, 0, n)
	for i := 0; len(out) < n; i++ {
		var rc map[string]any
		raw, _ := json.Marshal(src[i%len(src)])
		require.NoError(b, json.Unmarshal(raw, &rc))
		rc["address"] = fmt.Sprintf("%s_%d", rc["address"], i)
		out = append(out, rc)
	}
	p["resource_changes"] = out
	bs, err := json.Marshal(p)
	require.NoError(b, err)
	return bs
}

func sample(b *testing.B, n int, f func()) []time.Duration {
	b.Helper()
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		f()
		d[i] = time.Since(start)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d
}

// cpuTime is the process's user and system CPU time: on a shared machine
// wall times include waiting for a core, CPU time does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
