package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	tfjson "github.com/hashicorp/terraform-json"
)

// sink serializes everything a job prints: terraform's stdout and stderr are
// copied by two goroutines inside terraform-exec, and the cancellation
// watcher writes Agent lines from a third, so the caller's writers and Agent
// func are never called concurrently.
type sink struct {
	mu     sync.Mutex
	stdout io.Writer
	stderr io.Writer
	agent  func(string)
	// groups, when set, learns terraform's process group from the first
	// lines it prints (see groupSet).
	groups *groupSet
}

func newSink(j Job) *sink {
	s := &sink{stdout: j.Stdout, stderr: j.Stderr, agent: j.Agent}
	if s.stdout == nil {
		s.stdout = io.Discard
	}
	if s.stderr == nil {
		s.stderr = io.Discard
	}
	if s.agent == nil {
		s.agent = func(string) {}
	}
	return s
}

func (s *sink) agentf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.agent(fmt.Sprintf(format, args...))
}

// lines writes whole lines to w; a write error (a broken log sink) must not
// stop terraform, so it is dropped here and the sink owner reports it.
func (s *sink) lines(w io.Writer, ls ...string) {
	if s.groups != nil {
		s.groups.noticeOutput()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range ls {
		_, _ = io.WriteString(w, l+"\n")
	}
}

// lineWriter cuts a byte stream into lines and hands each to emit.
type lineWriter struct {
	buf  []byte
	emit func(line []byte)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(bytes.TrimSuffix(w.buf[:i], []byte("\r")))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// Flush emits a final line that had no newline.
func (w *lineWriter) Flush() {
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}

// rawWriter passes lines through unchanged (stderr, and init on binaries
// without init -json).
func (s *sink) rawWriter(w io.Writer) *lineWriter {
	return &lineWriter{emit: func(l []byte) { s.lines(w, string(l)) }}
}

// uiMessage is the part of terraform's machine-readable UI messages
// (https://developer.hashicorp.com/terraform/internals/machine-readable-ui)
// the runner uses.
type uiMessage struct {
	Level      string             `json:"@level"`
	Message    string             `json:"@message"`
	Type       string             `json:"type"`
	Diagnostic *tfjson.Diagnostic `json:"diagnostic"`
	Changes    *struct {
		Operation string `json:"operation"`
	} `json:"changes"`
	// Outputs is set on the "outputs" message that ends an apply: every
	// root module output with its type, and its value unless sensitive.
	Outputs map[string]Output `json:"outputs"`
}

// jsonStream renders terraform's -json output as the lines a person would
// have seen without -json and keeps what classification needs.
type jsonStream struct {
	lineWriter
	s       *sink
	diags   []tfjson.Diagnostic
	applied bool // terraform reported "Apply complete!" / "Destroy complete!"
	// outputs are the root module outputs of apply's "outputs" message
	// (nil when terraform sent none), sensitive values redacted.
	outputs map[string]Output
	// hold keeps plan's per-resource lines (planned_change, resource_drift)
	// and its summary line back until release: the diff replaces the first
	// and goes before the second.
	hold    bool
	held    []string
	summary []string
}

// heldTypes are the plan messages the attribute diff replaces.
var heldTypes = map[string]bool{"planned_change": true, "resource_drift": true}

// release writes diff and then the held summary; with a nil diff (no plan
// to show) it writes the held lines as terraform sent them. empty drops the
// "Plan: 0 to add…" line, which terraform does not print under "No changes."
func (js *jsonStream) release(diff []string, empty bool) {
	if !js.hold {
		return
	}
	js.hold = false
	if diff == nil {
		js.s.lines(js.s.stdout, js.held...)
	} else {
		js.s.lines(js.s.stdout, "")
		js.s.lines(js.s.stdout, diff...)
		if len(js.summary) > 0 && !empty {
			js.s.lines(js.s.stdout, "")
		}
	}
	if !empty || diff == nil {
		js.s.lines(js.s.stdout, js.summary...)
	}
	js.held, js.summary = nil, nil
}

func (s *sink) jsonStream() *jsonStream {
	js := &jsonStream{s: s}
	js.emit = js.handle
	return js
}

func (js *jsonStream) handle(line []byte) {
	var m uiMessage
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &m) != nil || (m.Type == "" && m.Message == "") {
		js.s.lines(js.s.stdout, string(line)) // not a UI message: a crash or a plugin writing to stdout
		return
	}
	if m.Type == "change_summary" && m.Changes != nil && (m.Changes.Operation == "apply" || m.Changes.Operation == "destroy") {
		js.applied = true
	}
	if m.Type == "outputs" && m.Outputs != nil {
		js.outputs = redactOutputMessage(m.Outputs)
	}
	if m.Type == "diagnostic" && m.Diagnostic != nil {
		js.diags = append(js.diags, *m.Diagnostic)
		js.s.lines(js.s.stdout, renderDiagnostic(m.Message, m.Diagnostic)...)
		return
	}
	msg := strings.Trim(m.Message, "\n")
	if msg == "" {
		return
	}
	switch {
	case js.hold && heldTypes[m.Type]:
		js.held = append(js.held, strings.Split(msg, "\n")...)
		return
	case js.hold && m.Type == "change_summary":
		js.summary = append(js.summary, strings.Split(msg, "\n")...)
		return
	}
	js.s.lines(js.s.stdout, strings.Split(msg, "\n")...)
}

// renderDiagnostic lays a diagnostic out the way terraform's human output
// does, without the box drawing.
func renderDiagnostic(heading string, d *tfjson.Diagnostic) []string {
	if heading == "" {
		sev := string(d.Severity)
		if sev == "" {
			sev = "error"
		}
		heading = strings.ToUpper(sev[:1]) + sev[1:] + ": " + d.Summary
	}
	out := []string{""}
	out = append(out, strings.Split(heading, "\n")...)
	if d.Range != nil {
		where := fmt.Sprintf("  on %s line %d", d.Range.Filename, d.Range.Start.Line)
		if d.Snippet != nil && d.Snippet.Context != nil && *d.Snippet.Context != "" {
			where += ", in " + *d.Snippet.Context
		}
		out = append(out, "", where+":")
		if d.Snippet != nil {
			for i, code := range strings.Split(d.Snippet.Code, "\n") {
				out = append(out, fmt.Sprintf("%4d: %s", d.Snippet.StartLine+i, code))
			}
			for _, v := range d.Snippet.Values {
				// terraform already says "has a sensitive value" instead of
				// printing sensitive ones.
				out = append(out, "    "+v.Traversal+" "+v.Statement)
			}
		}
	}
	if detail := strings.TrimSpace(d.Detail); detail != "" {
		out = append(out, "")
		out = append(out, strings.Split(detail, "\n")...)
	}
	return append(out, "")
}
