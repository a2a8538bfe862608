package policy

import (
	"sort"
	"unicode/utf8"
)

// Kind is what a rule's messages mean.
type Kind string

const (
	// KindDeny and KindViolation fail the deployment: nothing is applied.
	KindDeny      Kind = "deny"
	KindViolation Kind = "violation"
	// KindWarn sends the deployment to a person for approval.
	KindWarn Kind = "warn"
	// KindException is a conftest exception rule (it drops messages).
	KindException Kind = "exception"
)

func (k Kind) rank() int {
	switch k {
	case KindDeny:
		return 0
	case KindViolation:
		return 1
	case KindWarn:
		return 2
	}
	return 3
}

// Limits on what a result carries: it is stored on the deployment row.
const (
	maxMessageLen = 2000
	maxVerdicts   = 200
)

// Verdict is one message of one rule.
type Verdict struct {
	Kind    Kind   `json:"kind"`
	Rule    string `json:"rule"`
	Package string `json:"package"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Msg     string `json:"msg"`
}

// Exception is a rule whose messages a conftest exception dropped.
type Exception struct {
	Rule    string `json:"rule"`
	Package string `json:"package"`
	Dropped int    `json:"dropped"`
}

// Result is what a plan's evaluation returns and the deployment stores
// (deployments.policy): verdicts and the set's digest, never plan values.
type Result struct {
	// Digest is the evaluated set's digest, "sha256:<hex>".
	Digest string `json:"digest"`
	// Set is the config's policy set; "" for the files outside sets/.
	Set string `json:"set,omitempty"`
	// Verdicts, denies first, then violations, then warnings; at most
	// maxVerdicts (Omitted counts the rest, which the counts include).
	Verdicts   []Verdict   `json:"verdicts"`
	Exceptions []Exception `json:"exceptions,omitempty"`
	Denies     int         `json:"denies"`
	Warnings   int         `json:"warnings"`
	Omitted    int         `json:"omitted,omitempty"`
	// Rules is how many rule definitions were evaluated.
	Rules int `json:"rules"`
	// Error is the evaluation error, when the pipeline records a failed
	// evaluation (Failed builds it).
	Error string `json:"error,omitempty"`
	// TookMS is the evaluation's wall time.
	TookMS int64 `json:"took_ms"`
}

// Denied reports whether any deny or violation fired: the deployment fails.
func (r *Result) Denied() bool { return r != nil && r.Denies > 0 }

// Warned reports whether any warning fired: the deployment needs approval.
func (r *Result) Warned() bool { return r != nil && r.Warnings > 0 }

// FirstDenial is the first deny or violation message ("" when none): the
// deployment's error.
func (r *Result) FirstDenial() string {
	if r == nil {
		return ""
	}
	for _, v := range r.Verdicts {
		if v.Kind == KindDeny || v.Kind == KindViolation {
			return v.Msg
		}
	}
	return ""
}

// Failed is the record of an evaluation that failed, for the row.
func Failed(digest, set string, err error) *Result {
	return &Result{Digest: digest, Set: set, Verdicts: []Verdict{}, Error: err.Error()}
}

// finish sorts the verdicts, counts them and keeps the first maxVerdicts.
func (r *Result) finish() {
	sort.SliceStable(r.Verdicts, func(i, j int) bool {
		a, b := r.Verdicts[i], r.Verdicts[j]
		if a.Kind.rank() != b.Kind.rank() {
			return a.Kind.rank() < b.Kind.rank()
		}
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Msg < b.Msg
	})
	r.Denies, r.Warnings = 0, 0
	for _, v := range r.Verdicts {
		if v.Kind == KindWarn {
			r.Warnings++
		} else {
			r.Denies++
		}
	}
	if len(r.Verdicts) > maxVerdicts {
		r.Omitted = len(r.Verdicts) - maxVerdicts
		r.Verdicts = r.Verdicts[:maxVerdicts]
	}
	if r.Verdicts == nil {
		r.Verdicts = []Verdict{}
	}
}

// cut shortens s to at most n bytes on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
