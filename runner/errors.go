package runner

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	tfjson "github.com/hashicorp/terraform-json"

	"github.com/grapehq/grape/internal/errkind"
)

// The kinds of failure a runner Error carries are errkind's: the values the
// deployment's error_kind column stores. A failure reading outputs after a
// successful apply is errkind.Internal with Phase "outputs".

// phaseKind is the kind of a command's own failure in phase.
func phaseKind(phase string) errkind.Kind {
	switch phase {
	case "init":
		return errkind.Init
	case "plan":
		return errkind.Plan
	case "apply":
		return errkind.Apply
	}
	return errkind.Internal
}

// ErrLockFileChanged is wrapped by the init Error when terraform init would
// have changed the committed provider lock file.
var ErrLockFileChanged = errors.New("provider lock file changed by terraform init")

// Error is what every Runner method returns when terraform did not do what
// was asked. Use errors.As to get it; errors.Is(err, errkind.ErrCancelRequested) and
// errors.Is(err, context.DeadlineExceeded) work through Unwrap.
type Error struct {
	Kind  errkind.Kind // init, plan, apply, state_lock, timeout, cancelled or internal
	Phase string       // init, plan, apply, outputs: where it stopped
	Msg   string       // one clear sentence for the deployment's error column
	Lock  *LockInfo    // set when Kind is KindStateLock
	// LockLeft: terraform took the state lock but could not release it
	// (the backend went away), so the lock may still be held. Msg then
	// contains LockNotReleased.
	LockLeft bool
	Err      error // the underlying error (exit status, cancellation cause)
}

// LockNotReleased is in the message of an Error whose terraform could not
// release the state lock it took, so a later run can tell, from the stored
// message, which deployment left a lock behind.
const LockNotReleased = "could not release the state lock"

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// LockInfo is terraform's description of a held state lock.
type LockInfo struct {
	ID        string `json:"id"`
	Path      string `json:"path"`
	Operation string `json:"operation"`
	Who       string `json:"who"`
	Version   string `json:"version"`
	Created   string `json:"created"`
	Info      string `json:"info,omitempty"`
}

// lockSummary is the diagnostic summary terraform (and OpenTofu) use when the
// state lock cannot be taken, and unlockSummary when it cannot be released;
// both are fixed strings in their backend code.
const (
	lockSummary   = "Error acquiring the state lock"
	unlockSummary = "Error releasing the state lock"
)

var lockLine = regexp.MustCompile(`^\s*(ID|Path|Operation|Who|Version|Created|Info):[ \t]*(.*?)\s*$`)

// parseLockInfo reads the "Lock Info:" block of a state-lock diagnostic's
// detail. It returns nil when the block is missing.
func parseLockInfo(detail string) *LockInfo {
	_, block, ok := strings.Cut(detail, "Lock Info:")
	if !ok {
		return nil
	}
	var li LockInfo
	found := false
	for _, line := range strings.Split(block, "\n") {
		m := lockLine.FindStringSubmatch(line)
		if m == nil {
			if found && strings.TrimSpace(line) == "" {
				break // the block ends at the first blank line
			}
			continue
		}
		found = true
		switch m[1] {
		case "ID":
			li.ID = m[2]
		case "Path":
			li.Path = m[2]
		case "Operation":
			li.Operation = m[2]
		case "Who":
			li.Who = m[2]
		case "Version":
			li.Version = m[2]
		case "Created":
			li.Created = m[2]
		case "Info":
			li.Info = m[2]
		}
	}
	if !found {
		return nil
	}
	return &li
}

// classify turns a failed terraform command into an Error from the
// diagnostics it printed and its exit status. It is only called when the
// command failed and the context was not cancelled.
func classify(phase string, diags []tfjson.Diagnostic, runErr error) *Error {
	var errs []tfjson.Diagnostic
	var release *tfjson.Diagnostic
	for _, d := range diags {
		switch {
		case d.Severity != tfjson.DiagnosticSeverityError:
		case d.Summary == unlockSummary:
			release = &d
		default:
			errs = append(errs, d)
		}
	}
	for _, d := range errs {
		if d.Summary != lockSummary {
			continue
		}
		li := parseLockInfo(d.Detail)
		if li == nil {
			// No lock info: nobody holds the lock, terraform could not
			// reach it (the backend is unreachable, access denied).
			return &Error{Kind: phaseKind(phase), Phase: phase, Msg: fmt.Sprintf("terraform %s could not acquire the state lock: %s", phase, causeSentence(d.Detail)), Err: runErr}
		}
		msg := "the state is locked by another terraform run"
		if li.Who != "" {
			msg = fmt.Sprintf("the state is locked by %s (%s since %s, lock ID %s)", li.Who, li.Operation, li.Created, li.ID)
		}
		return &Error{Kind: errkind.StateLock, Phase: phase, Msg: msg + "; wait for that run to finish or force-unlock it", Lock: li, Err: runErr}
	}
	if release != nil {
		// The lock terraform took may still be held: say so, after the
		// error that made the command fail, if there was another one.
		e := classify(phase, errs, runErr)
		if len(errs) == 0 {
			e.Msg = fmt.Sprintf("terraform %s %s: %s", phase, LockNotReleased, causeSentence(release.Detail))
		} else {
			e.Msg += "; terraform also " + LockNotReleased
		}
		e.LockLeft = true
		return e
	}
	kind := phaseKind(phase)
	if len(errs) == 0 {
		status := "an error"
		var ee *exec.ExitError
		if errors.As(runErr, &ee) {
			status = fmt.Sprintf("exit status %d", ee.ExitCode())
		}
		return &Error{Kind: kind, Phase: phase, Msg: fmt.Sprintf("terraform %s failed (%s) without a machine-readable error; see the log", phase, status), Err: runErr}
	}
	first := errs[0]
	msg := "terraform " + phase + " failed: " + oneLine(first.Summary)
	if first.Address != "" {
		msg += " (" + first.Address + ")"
	}
	if d := firstSentence(first.Detail); d != "" {
		msg += ": " + d
	}
	if n := len(errs) - 1 - countGeneric(errs[1:]); n > 0 {
		msg += fmt.Sprintf(" (and %d more error%s in the log)", n, plural(n))
	}
	return &Error{Kind: kind, Phase: phase, Msg: msg, Err: runErr}
}

// countGeneric counts follow-up diagnostics that add nothing for a reader
// ("execution halted" after an interrupted or failed apply).
func countGeneric(ds []tfjson.Diagnostic) int {
	n := 0
	for _, d := range ds {
		if d.Summary == "execution halted" && d.Detail == "" {
			n++
		}
	}
	return n
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// maxMsgPart bounds each part of an error sentence. Provider errors (the
// AWS SDK's) put the actual problem at the end of a 300–500 character
// summary, so the bound only stops a runaway message, and a cut ends at a
// word boundary: a reader must never see "…for parameter availabilit…".
const maxMsgPart = 1000

// oneLine folds a possibly wrapped terraform message into one line.
func oneLine(s string) string {
	return truncate(strings.Join(strings.Fields(s), " "), maxMsgPart)
}

// firstSentence returns the first sentence of a diagnostic's detail on one
// line: terraform details are often long explanations that open with the
// actual problem. A sentence ends at ". " before a capital letter, so
// addresses like 10.0.0.0/16 and "e.g. this" do not cut it short.
func firstSentence(detail string) string {
	para, _, _ := strings.Cut(strings.TrimSpace(detail), "\n\n")
	para = strings.Join(strings.Fields(para), " ")
	for i := 0; i+2 < len(para); i++ {
		if para[i] == '.' && para[i+1] == ' ' {
			if r, _ := utf8.DecodeRuneInString(para[i+2:]); unicode.IsUpper(r) {
				para = para[:i]
				break
			}
		}
	}
	return truncate(strings.TrimSuffix(para, "."), maxMsgPart)
}

// causeSentence is firstSentence for errors from a backend's SDK, whose
// detail is a long chain of wrapped errors: the root cause ("connect:
// connection refused") comes last, so a long one is cut in the middle.
func causeSentence(detail string) string {
	para, _, _ := strings.Cut(strings.TrimSpace(detail), "\n\n")
	para = strings.TrimSuffix(strings.Join(strings.Fields(para), " "), ".")
	r := []rune(para)
	if len(r) <= maxMsgPart {
		return para
	}
	head := maxMsgPart / 2
	tail := maxMsgPart - head - 1
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	cut := n - 1
	// Back up to a space unless that loses more than a fifth of the text.
	for i := cut; i > n*4/5; i-- {
		if r[i] == ' ' {
			cut = i
			break
		}
	}
	return strings.TrimRight(string(r[:cut]), " ") + "…"
}
