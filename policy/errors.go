package policy

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a policy file.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
	// Code is the compiler's error code (rego_parse_error, …) or
	// grape_rule_shape for a deny/violation/warn rule of the wrong shape.
	Code string `json:"code"`
	Msg  string `json:"msg"`
}

func (p Problem) String() string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s: %s: %s", loc, p.Code, p.Msg)
}

// CompileError is a policy that does not parse or compile. The agent refuses
// to start with one: no deployment may run unjudged.
type CompileError struct {
	Problems []Problem
}

// maxProblemsShown keeps the start-up error readable; the rest are counted.
const maxProblemsShown = 10

func (e *CompileError) Error() string {
	var b strings.Builder
	b.WriteString("policies do not compile: ")
	for i, p := range e.Problems {
		if i == maxProblemsShown {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// EvalReason says why an evaluation failed.
type EvalReason string

const (
	// ReasonTimeout: the evaluation ran past its bound (a runaway loop).
	ReasonTimeout EvalReason = "timeout"
	// ReasonCancelled: the caller's context ended (the deployment was
	// cancelled or the agent is stopping).
	ReasonCancelled EvalReason = "cancelled"
	// ReasonConflict: a rule produced conflicting values.
	ReasonConflict EvalReason = "conflict"
	// ReasonBuiltin: a builtin function failed (bad arguments at run time).
	ReasonBuiltin EvalReason = "builtin"
	// ReasonType: an expression got a value of the wrong type.
	ReasonType EvalReason = "type"
	// ReasonMessage: a deny/violation/warn value was not a string or an
	// object with a string msg.
	ReasonMessage EvalReason = "message"
	// ReasonInput: the plan is not a JSON object.
	ReasonInput EvalReason = "input"
	// ReasonInternal: anything else, including a panic in the engine.
	ReasonInternal EvalReason = "internal"
)

// EvalError is a policy that failed to evaluate on a plan. The pipeline
// turns it into a failed deployment of kind policy; nothing is applied.
// Msg has been through the same redaction as messages.
type EvalError struct {
	Reason EvalReason
	Msg    string
	Err    error
}

func (e *EvalError) Error() string {
	if e.Reason == ReasonTimeout || e.Reason == ReasonCancelled {
		return "policy evaluation " + e.Msg
	}
	return "policy evaluation failed: " + e.Msg
}

func (e *EvalError) Unwrap() error { return e.Err }

// UnknownSetError is a config naming a policy set the agent does not have.
type UnknownSetError struct {
	Set   string
	Known []string
}

func (e *UnknownSetError) Error() string {
	known := "none"
	if len(e.Known) > 0 {
		known = strings.Join(e.Known, ", ")
	}
	return fmt.Sprintf("policy set %q is not among this agent's policies (sets: %s): add %s/%s/ to a policy source, or clear the config's policy set", e.Set, known, setsDir, e.Set)
}
