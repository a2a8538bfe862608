package portal

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/store"
)

// agentView is an agent with what the page says about it.
type agentView struct {
	store.Agent
	Online bool
	Seen   string // "12s ago"
}

type clusterView struct {
	store.Cluster
	Agents  []agentView
	Configs int
}

func (s *Server) agentViews(agents []store.Agent, now time.Time) []agentView {
	out := make([]agentView, 0, len(agents))
	for _, a := range agents {
		age := now.Sub(a.LastHeartbeatAt)
		out = append(out, agentView{
			Agent:  a,
			Online: a.StoppedAt == nil && age < s.opts.AgentOfflineAfter,
			Seen:   ago(age),
		})
	}
	return out
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func (s *Server) clustersPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	now, err := s.store(ctx).Now(ctx)
	if err != nil {
		return err
	}
	clusters, err := s.store(ctx).ListClusterOverviews(ctx)
	if err != nil {
		return err
	}
	views := make([]clusterView, 0, len(clusters))
	for _, c := range clusters {
		views = append(views, clusterView{Cluster: c.Cluster, Agents: s.agentViews(c.Agents, now), Configs: c.Configs})
	}
	rows, err := s.store(ctx).ListNamedDeployments(ctx, store.ListFilter{Limit: 15})
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "clusters", view{Title: "Clusters", Nav: "clusters", Data: struct {
		Clusters    []clusterView
		Deployments []store.NamedDeployment
	}{views, rows}})
	return nil
}

// cluster reads the {cluster} of the URL; a malformed id is simply not found.
func (s *Server) cluster(r *http.Request) (store.Cluster, error) {
	id := r.PathValue("cluster")
	if store.ValidateClusterID(id) != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q: %w", id, store.ErrNotFound)
	}
	return s.store(r.Context()).GetCluster(r.Context(), id)
}

func (s *Server) config(r *http.Request) (store.Config, error) {
	c, err := s.cluster(r)
	if err != nil {
		return store.Config{}, err
	}
	name := r.PathValue("name")
	if store.ValidateConfigName(name) != nil {
		return store.Config{}, fmt.Errorf("config %q: %w", name, store.ErrNotFound)
	}
	return s.store(r.Context()).GetConfig(r.Context(), c.ID, name)
}

func (s *Server) clusterPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := s.cluster(r)
	if err != nil {
		return err
	}
	now, err := s.store(ctx).Now(ctx)
	if err != nil {
		return err
	}
	agents, err := s.store(ctx).ListAgents(ctx, c.ID)
	if err != nil {
		return err
	}
	drift, err := s.latestDrift(ctx, c.ID)
	if err != nil {
		return err
	}
	rows, err := s.store(ctx).ListNamedDeployments(ctx, store.ListFilter{ClusterID: c.ID, Limit: 20})
	if err != nil {
		return err
	}
	role, err := s.role(ctx, c.ID)
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "cluster", view{Title: "Cluster " + c.ID, Nav: "clusters", Data: struct {
		Cluster     store.Cluster
		Agents      []agentView
		Configs     []ConfigDrift
		Deployments []store.NamedDeployment
		Role        store.Role
	}{c, s.agentViews(agents, now), drift, rows, role}})
	return nil
}

// intentSummary is what the config page says about a stored intent.
type intentSummary struct {
	Modules     []string
	Region      string
	Environment string
	Problem     string // the stored intent no longer validates (templates changed)
}

func (s *Server) summarizeIntent(spec []byte) intentSummary {
	in, err := s.catalog.Validate(spec)
	if err != nil {
		return intentSummary{Problem: err.Error()}
	}
	return intentSummary{Modules: in.EnabledModules(), Region: in.Region(), Environment: in.Environment()}
}

func prettyJSON(raw []byte) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

type versionView struct {
	store.ConfigVersion
	Pretty string
}

func (s *Server) configPage(w http.ResponseWriter, r *http.Request) error {
	c, err := s.config(r)
	if err != nil {
		return err
	}
	return s.renderConfig(w, r, http.StatusOK, c, "")
}

// renderConfig shows a config's page; destroyErr is a refused destroy
// confirmation, shown at the form it concerns (opened) so the person can
// type the name again where they were.
func (s *Server) renderConfig(w http.ResponseWriter, r *http.Request, status int, c store.Config, destroyErr string) error {
	ctx := r.Context()
	hist, err := s.store(ctx).ConfigHistory(ctx, c.ID)
	if err != nil {
		return err
	}
	versions := make([]versionView, 0, len(hist))
	for _, v := range hist {
		versions = append(versions, versionView{ConfigVersion: v, Pretty: prettyJSON(v.Spec)})
	}
	rows, err := s.store(ctx).ListNamedDeployments(ctx, store.ListFilter{ConfigID: &c.ID, Limit: 20})
	if err != nil {
		return err
	}
	drift, err := s.latestDriftFor(ctx, c)
	if err != nil {
		return err
	}
	role, err := s.role(ctx, c.ClusterID)
	if err != nil {
		return err
	}
	saved, _ := strconv.Atoi(r.URL.Query().Get("saved"))
	s.render(w, r, status, "config", view{Title: c.ClusterID + "/" + c.Name, Nav: "clusters", Data: struct {
		Config       store.Config
		Spec         string
		Intent       intentSummary
		Versions     []versionView
		Deployments  []store.NamedDeployment
		Drift        *DriftView
		Saved        int
		DestroyError string
		Role         store.Role
	}{c, prettyJSON(c.Spec), s.summarizeIntent(c.Spec), versions, rows, drift, saved, destroyErr, role}})
	return nil
}

// editorForm is the config editor's state: what was typed, and the problems
// found in it, placed on the lines they concern.
type editorForm struct {
	Cluster         string
	Name            string
	New             bool
	Version         int
	Spec            string
	RequireApproval bool
	AutoRemediate   bool
	DriftSchedule   string

	NameError     string
	ScheduleError string
	Conflict      string
	// Problems lists every intent problem; Lines is the submitted intent
	// with the problems under the line each names.
	Problems []problem
	Lines    []sourceLine
}

type problem struct {
	Path    string
	Line    int
	Message string
}

type sourceLine struct {
	No       int
	Text     string
	Problems []problem
}

func (f *editorForm) hasErrors() bool {
	return f.NameError != "" || f.ScheduleError != "" || f.Conflict != "" || len(f.Problems) > 0
}

func formFromConfig(c store.Config) editorForm {
	f := editorForm{Cluster: c.ClusterID, Name: c.Name, Version: c.Version, Spec: prettyJSON(c.Spec),
		RequireApproval: c.RequireApproval, AutoRemediate: c.AutoRemediate}
	if c.DriftSchedule != nil {
		f.DriftSchedule = *c.DriftSchedule
	}
	return f
}

func (s *Server) editConfigPage(w http.ResponseWriter, r *http.Request) error {
	c, err := s.config(r)
	if err != nil {
		return err
	}
	if err := s.mayEdit(r.Context(), c.ClusterID); err != nil {
		return err
	}
	s.renderEditor(w, r, http.StatusOK, formFromConfig(c))
	return nil
}

// mayEdit spares a user below admin an editor whose save the database
// would refuse (the user_create/user_edit policies decide; this only reads
// the role they would check).
func (s *Server) mayEdit(ctx context.Context, clusterID string) error {
	role, err := s.role(ctx, clusterID)
	if err != nil {
		return err
	}
	if !role.Allows(store.RoleAdmin) {
		return pageError{http.StatusForbidden, fmt.Sprintf("Editing configs of cluster %s needs the admin role; yours is %s. An admin of the cluster can change it (grape member add).", clusterID, cmp.Or(string(role), "none"))}
	}
	return nil
}

func (s *Server) newConfigPage(w http.ResponseWriter, r *http.Request) error {
	c, err := s.cluster(r)
	if err != nil {
		return err
	}
	if err := s.mayEdit(r.Context(), c.ID); err != nil {
		return err
	}
	s.renderEditor(w, r, http.StatusOK, editorForm{Cluster: c.ID, New: true, Spec: "{\n  \"region\": \"eu-central-1\",\n  \"modules\": {\n    \"vpc\": {}\n  }\n}\n"})
	return nil
}

func (s *Server) renderEditor(w http.ResponseWriter, r *http.Request, status int, f editorForm) {
	title := "Edit " + f.Cluster + "/" + f.Name
	if f.New {
		title = "New config in " + f.Cluster
	}
	s.render(w, r, status, "edit", view{Title: title, Nav: "clusters", Data: f})
}

// readEditor reads the posted editor form and checks everything but the
// version: the intent with the catalog (as the CLI and the agent do), the
// drift schedule, and for a new config its name. The normalised intent is
// returned when there are no problems.
func (s *Server) readEditor(r *http.Request, f *editorForm) []byte {
	f.Spec = r.PostFormValue("spec")
	f.RequireApproval = r.PostFormValue("require_approval") != ""
	f.AutoRemediate = r.PostFormValue("auto_remediate") != ""
	f.DriftSchedule = strings.TrimSpace(r.PostFormValue("drift_schedule"))
	if f.DriftSchedule != "" {
		if err := validateSchedule(f.DriftSchedule); err != nil {
			f.ScheduleError = err.Error()
		}
	}
	spec := []byte(f.Spec)
	in, err := s.catalog.Validate(spec)
	if err == nil {
		return in.JSON()
	}
	var ve *render.ValidationError
	if !errors.As(err, &ve) {
		ve = &render.ValidationError{Errors: []render.FieldError{{Message: err.Error()}}}
	}
	f.Problems, f.Lines = placeProblems(spec, ve.Errors)
	return nil
}

// placeProblems puts each validation error on the line of the field it
// names (or of its closest ancestor present); document-wide errors of
// invalid JSON go on the line where parsing stopped.
func placeProblems(spec []byte, errs []render.FieldError) ([]problem, []sourceLine) {
	lines := fieldLines(spec)
	synLine := syntaxLine(spec)
	var probs []problem
	for _, fe := range errs {
		p := problem{Path: fe.Path, Message: fe.Message}
		if fe.Path != "" {
			p.Line = lineForPath(lines, fe.Path)
		} else if synLine > 0 {
			p.Line = synLine
		}
		probs = append(probs, p)
	}
	text := strings.Split(strings.TrimRight(string(spec), "\n"), "\n")
	out := make([]sourceLine, len(text))
	for i, t := range text {
		out[i] = sourceLine{No: i + 1, Text: strings.TrimRight(t, "\r")}
	}
	for _, p := range probs {
		if p.Line >= 1 && p.Line <= len(out) {
			out[p.Line-1].Problems = append(out[p.Line-1].Problems, p)
		}
	}
	return probs, out
}

func (s *Server) saveConfig(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := s.config(r)
	if err != nil {
		return err
	}
	f := editorForm{Cluster: c.ClusterID, Name: c.Name, Version: c.Version}
	spec := s.readEditor(r, &f)
	// Refuse to overwrite a change someone else saved since this editor was
	// opened; the form keeps what was typed, so nothing is lost.
	if seen, _ := strconv.Atoi(r.PostFormValue("version")); seen != c.Version {
		f.Conflict = fmt.Sprintf("This config changed since you opened it (version %d, now %d). Your text is kept below: review the current version on the config page, then save again.", seen, c.Version)
	}
	if f.hasErrors() {
		s.renderEditor(w, r, http.StatusUnprocessableEntity, f)
		return nil
	}
	saved, err := s.store(ctx).UpsertConfig(ctx, c.ClusterID, c.Name, spec, f.settings())
	if err != nil {
		return err
	}
	s.log.Info("config saved", "cluster_id", saved.ClusterID, "config_id", saved.ID, "version", saved.Version, "user", sessionFrom(ctx).User)
	http.Redirect(w, r, configPath(saved)+"?saved="+strconv.Itoa(saved.Version), http.StatusSeeOther)
	return nil
}

func (f *editorForm) settings() store.ConfigSettings {
	schedule := f.DriftSchedule // "" clears it: back to the agent's default
	return store.ConfigSettings{RequireApproval: &f.RequireApproval, AutoRemediate: &f.AutoRemediate, DriftSchedule: &schedule}
}

func (s *Server) createConfig(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := s.cluster(r)
	if err != nil {
		return err
	}
	f := editorForm{Cluster: c.ID, New: true, Name: strings.TrimSpace(r.PostFormValue("name"))}
	spec := s.readEditor(r, &f)
	if err := store.ValidateConfigName(f.Name); err != nil {
		f.NameError = "Use 1-63 lowercase letters, digits, '-' and '_', starting and ending with a letter or digit."
	} else if _, err := s.store(ctx).GetConfig(ctx, c.ID, f.Name); err == nil {
		f.NameError = "A config with this name exists in the cluster: edit it instead."
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if f.hasErrors() {
		s.renderEditor(w, r, http.StatusUnprocessableEntity, f)
		return nil
	}
	saved, err := s.store(ctx).UpsertConfig(ctx, c.ID, f.Name, spec, f.settings())
	if err != nil {
		return err
	}
	s.log.Info("config created", "cluster_id", saved.ClusterID, "config_id", saved.ID, "user", sessionFrom(ctx).User)
	http.Redirect(w, r, configPath(saved)+"?saved="+strconv.Itoa(saved.Version), http.StatusSeeOther)
	return nil
}

func configPath(c store.Config) string {
	return "/clusters/" + c.ClusterID + "/configs/" + c.Name
}

func (s *Server) deploymentsPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	f := store.ListFilter{ClusterID: q.Get("cluster"), Limit: 100}
	if st := q.Get("status"); st != "" {
		f.Statuses = []store.Status{store.Status(st)}
	}
	rows, err := s.store(ctx).ListNamedDeployments(ctx, f)
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "deployments", view{Title: "Deployments", Nav: "deployments", Data: struct {
		Deployments []store.NamedDeployment
		Cluster     string
		Status      string
	}{rows, f.ClusterID, q.Get("status")}})
	return nil
}

func (s *Server) driftPage(w http.ResponseWriter, r *http.Request) error {
	drift, err := s.latestDrift(r.Context(), r.URL.Query().Get("cluster"))
	if err != nil {
		return err
	}
	// Drifted first: that is what the page is for.
	sort.SliceStable(drift, func(i, j int) bool { return driftRank(drift[i]) < driftRank(drift[j]) })
	s.render(w, r, http.StatusOK, "drift", view{Title: "Drift", Nav: "drift", Data: drift})
	return nil
}

func driftRank(c ConfigDrift) int {
	switch {
	case c.Latest == nil:
		return 3
	case c.Latest.Status == store.DriftDrifted:
		return 0
	case c.Latest.Status == store.DriftError:
		return 1
	default:
		return 2
	}
}

// auditPage is the audit trail, newest last: who changed configs, queued,
// approved, rejected or cancelled deployments, members and agent roles.
func (s *Server) auditPage(w http.ResponseWriter, r *http.Request) error {
	evs, err := s.store(r.Context()).ListAudit(r.Context(), store.AuditFilter{ClusterID: r.URL.Query().Get("cluster"), Limit: 500})
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "audit", view{Title: "Audit", Nav: "audit", Data: evs})
	return nil
}
