package render

import (
	"fmt"
	"strings"
)

// FieldError is one problem with an intent: where it is (a JSON path such as
// "modules.vpc.cidr"; empty for the document as a whole) and what is wrong
// with it, including how to fix it.
type FieldError struct {
	Path    string
	Message string
}

func (e FieldError) String() string {
	if e.Path == "" {
		return "intent: " + e.Message
	}
	return e.Path + ": " + e.Message
}

// ValidationError lists every problem found in an intent, in document order,
// so a person can fix them all in one go. Callers detect it with errors.As and
// treat it as bad input (not retryable).
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	if len(e.Errors) == 1 {
		return "invalid intent: " + e.Errors[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invalid intent (%d errors):", len(e.Errors))
	for _, fe := range e.Errors {
		b.WriteString("\n  - ")
		b.WriteString(fe.String())
	}
	return b.String()
}

// problems collects field errors while validating.
type problems struct{ list []FieldError }

func (p *problems) add(path, format string, args ...any) {
	p.list = append(p.list, FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &ValidationError{Errors: p.list}
}
