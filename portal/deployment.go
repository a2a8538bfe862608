package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

// deploymentState is what a deployment page shows that changes while it
// runs. The page renders it, and the live terminal's status events carry it
// as JSON, so both say the same.
type deploymentState struct {
	Status          string      `json:"status"`
	Phase           string      `json:"phase"`
	Final           bool        `json:"final"`
	Error           string      `json:"error"`
	ErrorKind       string      `json:"error_kind"`
	CommitSHA       string      `json:"commit_sha"`
	CommitURL       string      `json:"commit_url"`
	Plan            *planView   `json:"plan"`
	Cost            string      `json:"cost"`
	Policy          *policyView `json:"policy"`
	CanApprove      bool        `json:"can_approve"`
	CanCancel       bool        `json:"can_cancel"`
	CancelRequested bool        `json:"cancel_requested"`
	ApprovedBy      string      `json:"approved_by"`
	ReviewComment   string      `json:"review_comment"`
	Diff            *diffView   `json:"diff"`
	// The run's progress facts: a page opened while queued must end
	// showing the attempt and times, not the blanks it was rendered with.
	Attempt     int    `json:"attempt"`
	MaxAttempts int    `json:"max_attempts"`
	Agent       string `json:"agent"`
	StartedAt   string `json:"started_at"`
	FinishedAt  string `json:"finished_at"`
	CanRetry    bool   `json:"can_retry"`
	Queued      bool   `json:"queued"`
	// Outputs are the root module's outputs after an apply, sensitive ones
	// masked (the row never holds their values: runner.Outputs redacts).
	Outputs []outputView `json:"outputs"`
	// DriftStatus is what a finished drift check found (in_sync, drifted,
	// error): the page shows it instead of a green "succeeded".
	DriftStatus string `json:"drift_status"`
	// Waiting says why a queued deployment is not taken when its config's
	// state is held by an offline agent ("waiting for agent X, …").
	Waiting string `json:"waiting"`
}

type outputView struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Sensitive bool   `json:"sensitive"`
}

// decodeOutputs reads the outputs column ({name: {sensitive, type, value}},
// runner.Output), sorted by name.
func decodeOutputs(raw json.RawMessage) []outputView {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]struct {
		Sensitive bool            `json:"sensitive"`
		Value     json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return []outputView{{Name: "(outputs unreadable)"}}
	}
	out := make([]outputView, 0, len(m))
	for name, o := range m {
		v := outputView{Name: name, Sensitive: o.Sensitive}
		if o.Sensitive {
			v.Value = sensitiveText
		} else {
			var x any
			if err := json.Unmarshal(o.Value, &x); err != nil {
				v.Value = string(o.Value)
			} else {
				v.Value = diffValue(x)
			}
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// queueView is where a queued run stands, for the person waiting on it.
type queueView struct {
	Position     int
	AgentsOnline int
	Cluster      string
	// Running is what the cluster's agents are running now (a few).
	Running []store.NamedDeployment
}

// Place says the position as people do: "next", "2nd".
func (q queueView) Place() string {
	if q.Position <= 1 {
		return "next in its config's queue"
	}
	suffix := "th"
	switch {
	case q.Position%100 >= 11 && q.Position%100 <= 13:
	case q.Position%10 == 1:
		suffix = "st"
	case q.Position%10 == 2:
		suffix = "nd"
	case q.Position%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprintf("%d%s in its config's queue", q.Position, suffix)
}

// diffView is the plan's attribute diff (plan_diff, a plandiff.Diff that
// holds no sensitive value) ready to show: each value already formatted, so
// the page and portal.js show the same text.
type diffView struct {
	Empty     bool           `json:"empty"`
	Open      bool           `json:"open"` // resources start expanded unless there are many
	Resources []diffResource `json:"resources"`
	Drift     []diffResource `json:"drift"`
	Outputs   []diffAttr     `json:"outputs"`
}

type diffResource struct {
	Address    string     `json:"address"`
	Action     string     `json:"action"`
	Reason     string     `json:"reason"`
	Open       bool       `json:"-"` // diffView.Open, for the template
	Attributes []diffAttr `json:"attributes"`
}

type diffAttr struct {
	Symbol string `json:"symbol"` // +, - or ~ as terraform prints them
	Path   string `json:"path"`
	Old    string `json:"old"` // empty for an added value
	New    string `json:"new"` // empty for a removed value
	Note   string `json:"note"`
}

// maxOpenResources: a longer diff starts collapsed, so the approval
// buttons below it stay within reach.
const maxOpenResources = 20

const (
	sensitiveText = "(sensitive value)"
	unknownText   = "(known after apply)"
)

// decodeDiff reads the plan_diff column; nil when the run has not planned
// (or planned before Grape stored diffs).
func decodeDiff(raw json.RawMessage) *diffView {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var d plandiff.Diff
	if err := json.Unmarshal(raw, &d); err != nil {
		return &diffView{Resources: []diffResource{{Address: "plan diff unreadable", Action: "unknown"}}}
	}
	v := &diffView{Empty: d.Empty(), Open: len(d.Resources)+len(d.Drift) <= maxOpenResources, Resources: diffResources(d.Resources), Drift: diffResources(d.Drift)}
	for _, rs := range [][]diffResource{v.Resources, v.Drift} {
		for i := range rs {
			rs[i].Open = v.Open
		}
	}
	for _, a := range d.Outputs {
		v.Outputs = append(v.Outputs, diffAttribute(a))
	}
	return v
}

func diffResources(rs []plandiff.Resource) []diffResource {
	var out []diffResource
	for _, r := range rs {
		addr := r.Address
		if r.Deposed != "" {
			addr += " (deposed " + r.Deposed + ")"
		}
		dr := diffResource{Address: addr, Action: r.Action, Reason: strings.ReplaceAll(r.Reason, "_", " ")}
		for _, a := range r.Attributes {
			dr.Attributes = append(dr.Attributes, diffAttribute(a))
		}
		out = append(out, dr)
	}
	return out
}

func diffAttribute(a plandiff.Attribute) diffAttr {
	v := diffAttr{Symbol: map[string]string{"add": "+", "remove": "-", "change": "~"}[a.Action], Path: a.Path}
	switch {
	case a.Sensitive:
		v.New = sensitiveText // terraform prints no arrow either: nothing to compare
	case a.Action == "add" && a.Unknown:
		v.New = unknownText
	case a.Action == "add":
		v.New = diffValue(a.New)
	case a.Action == "remove":
		v.Old, v.New = diffValue(a.Old), "null"
	case a.Unknown:
		v.Old, v.New = diffValue(a.Old), unknownText
	default:
		v.Old, v.New = diffValue(a.Old), diffValue(a.New)
	}
	if a.ForcesReplacement {
		v.Note = "forces replacement"
	}
	return v
}

// diffValue formats a JSON value as terraform prints it: strings quoted,
// numbers and booleans bare. Markup is left to the template's escaping.
func diffValue(x any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return fmt.Sprint(x)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

type planView struct {
	Text      string         `json:"text"`
	Resources []resourceView `json:"resources"`
}

type resourceView struct {
	Address string `json:"address"`
	Action  string `json:"action"`
}

// policyView is the policies' verdicts on the plan, shown above the approval
// buttons so the person approving reads the warnings that sent the run to
// them.
type policyView struct {
	Text     string        `json:"text"`
	Verdicts []verdictView `json:"verdicts"`
}

type verdictView struct {
	Kind  string `json:"kind"`
	Msg   string `json:"msg"`
	Where string `json:"where"`
}

// decodePolicy reads the policy column (policy.Result; its JSON shape is
// docs/schema.md's, decoded here without importing the engine).
func decodePolicy(raw json.RawMessage) *policyView {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var r struct {
		Digest   string `json:"digest"`
		Set      string `json:"set"`
		Denies   int    `json:"denies"`
		Warnings int    `json:"warnings"`
		Omitted  int    `json:"omitted"`
		Rules    int    `json:"rules"`
		Error    string `json:"error"`
		Verdicts []struct {
			Kind string `json:"kind"`
			Rule string `json:"rule"`
			File string `json:"file"`
			Line int    `json:"line"`
			Msg  string `json:"msg"`
		} `json:"verdicts"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return &policyView{Text: "policy verdicts unreadable"}
	}
	v := &policyView{}
	switch {
	case r.Error != "":
		v.Text = "evaluation failed: " + r.Error
	case r.Denies == 0 && r.Warnings == 0:
		v.Text = fmt.Sprintf("passed (%d rules)", r.Rules)
	default:
		v.Text = fmt.Sprintf("%d denied, %d warnings", r.Denies, r.Warnings)
	}
	if r.Set != "" {
		v.Text += ", set " + r.Set
	}
	if len(r.Digest) > 19 {
		v.Text += " · " + r.Digest[:19]
	}
	for _, x := range r.Verdicts {
		v.Verdicts = append(v.Verdicts, verdictView{Kind: x.Kind, Msg: x.Msg, Where: fmt.Sprintf("%s (%s:%d)", x.Rule, x.File, x.Line)})
	}
	if r.Omitted > 0 {
		v.Verdicts = append(v.Verdicts, verdictView{Kind: "more", Msg: fmt.Sprintf("%d more verdicts, not listed (the log has every message)", r.Omitted)})
	}
	return v
}

// planSummary mirrors the plan_summary column the runner writes.
type planSummary struct {
	Add       int `json:"add"`
	Change    int `json:"change"`
	Destroy   int `json:"destroy"`
	Replace   int `json:"replace"`
	Import    int `json:"import"`
	Resources []struct {
		Address string   `json:"address"`
		Actions []string `json:"actions"`
		Deposed string   `json:"deposed"`
	} `json:"resources"`
}

// costEstimate mirrors the cost column (Infracost's figures as strings).
type costEstimate struct {
	Currency             string `json:"currency"`
	TotalMonthlyCost     string `json:"total_monthly_cost"`
	DiffTotalMonthlyCost string `json:"diff_total_monthly_cost"`
}

func decodePlan(raw json.RawMessage) *planView {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var p planSummary
	if err := json.Unmarshal(raw, &p); err != nil {
		return &planView{Text: "plan summary unreadable: " + truncate(string(raw), 200)}
	}
	v := &planView{Text: fmt.Sprintf("%d to add, %d to change, %d to destroy", p.Add, p.Change, p.Destroy)}
	if p.Replace > 0 {
		v.Text += fmt.Sprintf(" (%d replaced)", p.Replace)
	}
	if p.Import > 0 {
		v.Text += fmt.Sprintf(", %d to import", p.Import)
	}
	for _, r := range p.Resources {
		addr := r.Address
		if r.Deposed != "" {
			addr += " (deposed " + r.Deposed + ")"
		}
		v.Resources = append(v.Resources, resourceView{Address: addr, Action: actionLabel(r.Actions)})
	}
	return v
}

// actionLabel names terraform's action list the way people say it.
func actionLabel(actions []string) string {
	switch strings.Join(actions, ",") {
	case "delete,create", "create,delete":
		return "replace"
	case "":
		return "change"
	}
	return strings.Join(actions, ", ")
}

func decodeCost(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var c costEstimate
	if err := json.Unmarshal(raw, &c); err != nil || c.TotalMonthlyCost == "" {
		return ""
	}
	cur := c.Currency
	if cur == "" {
		cur = "USD"
	}
	text := fmt.Sprintf("%s %s per month", cur, c.TotalMonthlyCost)
	if c.DiffTotalMonthlyCost != "" {
		diff := c.DiffTotalMonthlyCost
		if !strings.HasPrefix(diff, "-") {
			diff = "+" + diff
		}
		text += " (" + diff + ")"
	}
	return text
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// stateOf is state plus what needs a read: a finished drift check's report.
func (s *Server) stateOf(ctx context.Context, d store.Deployment) (deploymentState, error) {
	role, err := s.role(ctx, d.ClusterID)
	if err != nil {
		return deploymentState{}, err
	}
	st := s.state(ctx, d, role)
	if d.Action == store.ActionDrift && d.Status.Final() {
		rep, err := s.store(ctx).DriftReportOf(ctx, d)
		switch {
		case err == nil:
			st.DriftStatus = string(rep.Status)
		case !errors.Is(err, store.ErrNotFound): // a failed check may have none
			return st, err
		}
	}
	return st, nil
}

// state is what the page shows of d; the buttons are those d's state and
// the user's role on its cluster allow.
func (s *Server) state(ctx context.Context, d store.Deployment, role store.Role) deploymentState {
	st := deploymentState{
		Status:     string(d.Status),
		Phase:      string(d.PhaseName()),
		Final:      d.Status.Final(),
		Error:      ptr.Deref(d.Error),
		ErrorKind:  string(ptr.Deref(d.ErrorKind)),
		CommitSHA:  ptr.Deref(d.CommitSHA),
		Plan:       decodePlan(d.PlanSummary),
		Cost:       decodeCost(d.Cost),
		Policy:     decodePolicy(d.Policy),
		CanApprove: role.Allows(store.RoleApprover) && d.Status == store.StatusAwaitingApproval && d.ApprovedAt == nil,
		CanCancel: role.Allows(store.RoleOperator) && (d.Status == store.StatusQueued || d.Status == store.StatusAwaitingApproval ||
			(d.Status == store.StatusInProgress && d.CancelRequestedAt == nil)),
		CancelRequested: d.CancelRequestedAt != nil && !d.Status.Final(),
		ApprovedBy:      ptr.Deref(d.ApprovedBy),
		ReviewComment:   ptr.Deref(d.ReviewComment),
		Diff:            decodeDiff(d.PlanDiff),
		Attempt:         d.Attempt,
		MaxAttempts:     d.MaxAttempts,
		Agent:           ptr.Deref(d.ClaimedBy),
		StartedAt:       formatTimePtr(d.StartedAt),
		FinishedAt:      formatTimePtr(d.FinishedAt),
		CanRetry:        role.Allows(store.RoleOperator) && (d.Status == store.StatusFailed || d.Status == store.StatusCancelled),
		Queued:          d.Status == store.StatusQueued,
		Outputs:         decodeOutputs(d.Outputs),
	}
	st.CommitURL = s.commitURL(st.CommitSHA)
	if why, err := s.store(ctx).WaitReason(ctx, d, store.HolderOfflineAfter); err == nil {
		// The "(… ago)" part would change every event; the page shows when.
		st.Waiting, _, _ = strings.Cut(why, " (")
	}
	return st
}

// maxPageLines bounds the log lines rendered into a deployment page; the
// full log is always at /deployments/{id}/log.
const maxPageLines = 100_000

func (s *Server) deploymentID(r *http.Request) (uuid.UUID, error) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return uuid.Nil, fmt.Errorf("deployment %q: %w", r.PathValue("id"), store.ErrNotFound)
	}
	return id, nil
}

func (s *Server) deploymentPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := s.deploymentID(r)
	if err != nil {
		return err
	}
	d, err := s.store(ctx).GetDeployment(ctx, id)
	if err != nil {
		return err
	}
	cfg, err := s.store(ctx).GetConfigByID(ctx, d.ConfigID)
	if err != nil {
		return err
	}
	return s.renderDeployment(w, r, http.StatusOK, d, cfg, "")
}

// renderDeployment shows a deployment's page; retryErr is a refused retry
// confirmation, shown at the Retry form.
func (s *Server) renderDeployment(w http.ResponseWriter, r *http.Request, status int, d store.Deployment, cfg store.Config, retryErr string) error {
	ctx := r.Context()
	id := d.ID
	var lines []store.LogLine
	var after int64
	truncated := false
	for {
		batch, err := s.store(ctx).ReadLogs(ctx, id, after, 5000)
		if err != nil {
			return err
		}
		lines = append(lines, batch...)
		if len(batch) < 5000 {
			break
		}
		after = batch[len(batch)-1].Seq
		if len(lines) >= maxPageLines {
			truncated = true
			break
		}
	}
	// A queued run says what holds its config's slot (a parked approval
	// holds it until decided or expired).
	var waitsFor string
	var queue *queueView
	if d.Status == store.StatusQueued {
		q, err := s.store(ctx).QueuePosition(ctx, id, s.opts.AgentOfflineAfter)
		if err != nil {
			return err
		}
		// What holds the queue (q.Active) is WaitsFor's to say, with why.
		queue = &queueView{Position: q.Position, AgentsOnline: q.AgentsOnline, Cluster: d.ClusterID}
		if queue.Running, err = s.store(ctx).ListNamedDeployments(ctx, store.ListFilter{ClusterID: d.ClusterID, Statuses: []store.Status{store.StatusInProgress}, Limit: 5}); err != nil {
			return err
		}
		blk, err := s.store(ctx).ConfigBlocker(ctx, d.ConfigID)
		switch {
		case err == nil:
			waitsFor = blk.Describe(time.Now())
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
	}
	state, err := s.stateOf(ctx, d)
	if err != nil {
		return err
	}
	s.render(w, r, status, "deployment", view{Title: "Deployment " + shortID(d.ID), Nav: "deployments", Data: struct {
		D         store.Deployment
		Config    store.Config
		State     deploymentState
		Lines     []store.LogLine
		Truncated bool
		WaitsFor  string
		Queue     *queueView
		RetryErr  string
	}{d, cfg, state, lines, truncated, waitsFor, queue, retryErr}})
	return nil
}

func shortID(id uuid.UUID) string { return strings.SplitN(id.String(), "-", 2)[0] }

// deploymentLogText serves the whole log as plain text (for download, and
// for logs longer than a page holds).
func (s *Server) deploymentLogText(w http.ResponseWriter, r *http.Request) error {
	id, err := s.deploymentID(r)
	if err != nil {
		return err
	}
	// One read-only transaction as the user, written out as it is read.
	return s.as(r.Context(), func(ctx context.Context) error { return s.writeLog(ctx, w, id) })
}

func (s *Server) writeLog(ctx context.Context, w http.ResponseWriter, id uuid.UUID) error {
	d, err := s.store(ctx).GetDeployment(ctx, id)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `inline; filename="deployment-`+id.String()+`.log"`)
	if d.LogsPrunedAt != nil {
		fmt.Fprintf(w, "[grape] this log was pruned at %s (log retention, grape prune)\n", d.LogsPrunedAt.UTC().Format(time.RFC3339))
	}
	var after int64
	for {
		batch, err := s.store(ctx).ReadLogs(ctx, id, after, 5000)
		if err != nil {
			s.log.Error("reading log for download failed", "deployment_id", id, "err", err)
			return nil // the status line is sent; a short body is all that can tell
		}
		var buf bytes.Buffer
		for _, l := range batch {
			buf.WriteString(l.Line)
			buf.WriteByte('\n')
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return nil //nolint:nilerr // the client left; the body has begun, so handle must not write an error page into it
		}
		if len(batch) < 5000 {
			return nil
		}
		after = batch[len(batch)-1].Seq
	}
}

// sseLine is one log line as a live terminal receives it. JSON escapes <, >
// and &, and the page inserts it as text, never as markup.
type sseLine struct {
	Seq    int64  `json:"seq"`
	Stream string `json:"stream"`
	Line   string `json:"line"`
	// T is when the line was stored, in Unix milliseconds: the page shows
	// it on hover (a title per line would weigh more than the line).
	T int64 `json:"t"`
}

const (
	sseBatch     = 500
	sseKeepalive = 15 * time.Second
)

// deploymentEvents is the live terminal's Server-Sent Events stream: every
// line after the client's last seq as a "line" event whose id is its seq (a
// reconnecting EventSource sends it back as Last-Event-ID, so it resumes with
// no gap and no duplicate), a "status" event whenever deploymentState
// changes, and "end" once the status is final and every line was sent.
func (s *Server) deploymentEvents(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := s.deploymentID(r)
	if err != nil {
		return err
	}
	// Each read below is its own short transaction as the user (s.as): an
	// open terminal holds no connection between reads.
	var d store.Deployment
	if err := s.as(ctx, func(ctx context.Context) (err error) {
		d, err = s.store(ctx).GetDeployment(ctx, id)
		return err
	}); err != nil {
		return err
	}
	after := resumePoint(r)

	// Subscribe before the first read: a batch committed between the read
	// and the subscription would otherwise wait for the next poll. Only
	// "there is more" matters, so one pending wake-up is enough.
	sub := notify.Subscribe(s.notifier, notify.LogsOf(id), 1)
	defer sub.Close()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	es := &eventStream{w: w, rc: http.NewResponseController(w)}
	es.printf("retry: 2000\n\n")

	var lastState []byte
	sendLines := func() {
		for es.err == nil {
			var lines []store.LogLine
			err := s.as(ctx, func(ctx context.Context) (err error) {
				lines, err = s.store(ctx).ReadLogs(ctx, id, after, sseBatch)
				return err
			})
			if err != nil {
				es.err = err
				return
			}
			for _, l := range lines {
				b, _ := json.Marshal(sseLine{Seq: l.Seq, Stream: string(l.Stream), Line: l.Line, T: l.CreatedAt.UnixMilli()})
				es.printf("id: %d\nevent: line\ndata: %s\n\n", l.Seq, b)
				after = l.Seq
			}
			if len(lines) < sseBatch {
				return
			}
		}
	}
	sendState := func() {
		var st deploymentState
		err := s.as(ctx, func(ctx context.Context) (err error) {
			st, err = s.stateOf(ctx, d)
			return err
		})
		if err != nil {
			es.err = err
			return
		}
		b, _ := json.Marshal(st)
		if !bytes.Equal(b, lastState) {
			es.printf("event: status\ndata: %s\n\n", b)
			lastState = b
		}
	}
	refresh := func() {
		var nd store.Deployment
		err := s.as(ctx, func(ctx context.Context) (err error) {
			nd, err = s.store(ctx).GetDeployment(ctx, id)
			return err
		})
		if err != nil {
			es.err = err
			return
		}
		d = nd
	}

	poll := time.NewTicker(s.opts.StatusPoll)
	defer poll.Stop()
	keepalive := time.NewTicker(sseKeepalive)
	defer keepalive.Stop()
	needLines := true
	for {
		if needLines {
			sendLines()
		}
		sendState()
		if d.Status.Final() && es.err == nil {
			// The agent stores every line before it writes the final status,
			// so lines read after seeing that status are all there is.
			sendLines()
			es.printf("event: end\ndata: {}\n\n")
		}
		es.flush()
		if es.err != nil || d.Status.Final() {
			// The stream has begun: an error can only end it, not turn
			// into an error page.
			if es.err != nil && ctx.Err() == nil {
				s.log.Warn("live terminal stream ended", "deployment_id", id, "err", es.err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub.C:
			needLines = true
			refresh()
		case <-sub.Resync: // (re)connected: a batch may have gone unannounced
			needLines = true
			refresh()
		case <-poll.C:
			// Lines are announced by NOTIFY; without the LISTEN connection
			// the poll reads them too.
			needLines = !s.notifier.Alive()
			refresh()
		case <-keepalive.C:
			needLines = false
			es.printf(": keepalive\n\n")
		}
	}
}

// resumePoint is the seq the client has: Last-Event-ID from a reconnecting
// EventSource wins over the ?after= the page started with.
func resumePoint(r *http.Request) int64 {
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if v == "" {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return n
		}
	}
	return 0
}

// eventStream writes SSE frames and remembers the first error (the client left).
type eventStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (e *eventStream) printf(format string, args ...any) {
	if e.err != nil {
		return
	}
	// A stuck client must not hold the handler forever.
	_ = e.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, e.err = fmt.Fprintf(e.w, format, args...)
}

func (e *eventStream) flush() {
	if e.err == nil {
		e.err = e.rc.Flush()
	}
}
