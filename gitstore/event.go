package gitstore

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Event is one thing that happened to a commit — a deployment reaching an
// end or a drift check — as its git note records it. Callers fill it from
// the control plane and redact it; Text only formats.
type Event struct {
	Deployment    string
	ClusterID     string
	Config        string
	ConfigVersion int
	Action        string
	// Status is the deployment's status at this event: succeeded, failed,
	// cancelled, awaiting_approval; for a drift check Drift says more.
	Status string
	// Outcome, if set, is what the summary line says instead of Status
	// ("rejected" for a plan a person turned down; its Status is cancelled).
	Outcome   string
	ErrorKind string
	Error     string
	// Plan counts; nil when no plan was made.
	Plan *PlanCounts
	// Changed lists planned changes as "<symbol> <address>" ("+ aws_vpc.this").
	Changed []string
	// Cost is the estimate as people read it ("+$32.40/month"), "" if unknown.
	Cost        string
	RequestedBy string
	ApprovedBy  string
	Comment     string
	// Engine is "terraform 1.11.4" or the like.
	Engine   string
	Agent    string
	Started  time.Time
	Finished time.Time
	// Drift is in_sync, drifted or error for a drift check; Drifted the
	// resources that differ, with their changed attributes.
	Drift   string
	Drifted []string
}

// PlanCounts are a plan's totals.
type PlanCounts struct{ Add, Change, Destroy int }

// maxChangedLines bounds the addresses listed in one event; the rest are
// counted, so a huge plan does not make an unreadable note.
const maxChangedLines = 100

// Text renders the event as "Key: value" lines under a one-line summary, so
// `git log --notes=grape` reads as the audit trail and scripts can grep it.
func (e Event) Text() string {
	var b strings.Builder
	line := func(key, value string) {
		if value = oneLine(value); value != "" {
			fmt.Fprintf(&b, "%s: %s\n", key, value)
		}
	}
	what := e.Action
	switch {
	case e.Drift != "":
		what = "drift check: " + e.Drift
	case e.Outcome != "":
		what += " " + e.Outcome
	case e.Status != "":
		what += " " + e.Status
	}
	fmt.Fprintf(&b, "Grape %s\n", oneLine(what))
	line("Deployment", e.Deployment)
	cfg := e.Config
	if cfg != "" && e.ConfigVersion > 0 {
		cfg = fmt.Sprintf("%s@v%d", cfg, e.ConfigVersion)
	}
	if e.ClusterID != "" {
		cfg += " (cluster " + e.ClusterID + ")"
	}
	line("Config", cfg)
	line("Action", e.Action)
	line("Status", e.Status)
	if e.Error != "" {
		kind := e.ErrorKind
		if kind == "" {
			kind = "error"
		}
		line("Error", kind+": "+e.Error)
	}
	if e.Plan != nil {
		line("Plan", fmt.Sprintf("%d to add, %d to change, %d to destroy", e.Plan.Add, e.Plan.Change, e.Plan.Destroy))
	}
	list(line, "Changed", e.Changed)
	line("Drift", e.Drift)
	list(line, "Drifted", e.Drifted)
	line("Cost", e.Cost)
	line("Requested-By", e.RequestedBy)
	line("Approved-By", e.ApprovedBy)
	line("Comment", e.Comment)
	line("Engine", e.Engine)
	line("Agent", e.Agent)
	if !e.Started.IsZero() {
		line("Started", e.Started.UTC().Format(time.RFC3339))
	}
	if !e.Finished.IsZero() {
		v := e.Finished.UTC().Format(time.RFC3339)
		if !e.Started.IsZero() && !e.Finished.Before(e.Started) {
			v += fmt.Sprintf(" (%s)", e.Finished.Sub(e.Started).Round(time.Second))
		}
		line("Finished", v)
	}
	return b.String()
}

func list(line func(k, v string), key string, items []string) {
	for i, it := range items {
		if i == maxChangedLines {
			line(key, fmt.Sprintf("… and %d more", len(items)-i))
			return
		}
		line(key, it)
	}
}

// oneLine keeps a value on its line: newlines and other control characters
// become spaces, so no value can forge a key of its own.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}
