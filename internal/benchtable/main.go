// Command benchtable reads `go test -bench` output on stdin, passes it
// through, and prints the results as one Markdown table at the end: each
// benchmark with its ns/op and every metric it reported (p50-ms, claims/s…).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

type result struct {
	pkg, name string
	metrics   [][2]string // value, unit
}

func main() {
	results, err := parse(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	fmt.Println()
	fmt.Print(table(results))
}

// parse echoes the input and collects benchmark lines.
func parse(r io.Reader, echo io.Writer) ([]result, error) {
	var out []result
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(echo, line)
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(p, "github.com/grapehq/grape/")
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		res := result{pkg: pkg, name: trimProcs(strings.TrimPrefix(f[0], "Benchmark"))}
		for i := 2; i+1 < len(f); i += 2 {
			res.metrics = append(res.metrics, [2]string{f[i], f[i+1]})
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// trimProcs drops the -GOMAXPROCS suffix: Foo/bar-2 → Foo/bar.
func trimProcs(name string) string {
	if i := strings.LastIndex(name, "-"); i > 0 && strings.Trim(name[i+1:], "0123456789") == "" {
		return name[:i]
	}
	return name
}

func table(rs []result) string {
	var b strings.Builder
	b.WriteString("| package | benchmark | results |\n|---|---|---|\n")
	for _, r := range rs {
		var parts []string
		for _, m := range r.metrics {
			parts = append(parts, m[0]+" "+m[1])
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.pkg, r.name, strings.Join(parts, ", "))
	}
	return b.String()
}
