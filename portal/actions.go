package portal

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/robfig/cron/v3"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/store"
)

type loginData struct {
	Next     string
	CSRF     string
	Error    string
	Username string
	Token    bool // a static token is accepted
	Users    bool
	Supabase bool
}

// loginPage shows the sign-in form. Its CSRF token is bound to a short-lived
// cookie, so another site cannot sign a browser in to an account of its
// choosing (login CSRF).
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.currentSession(r) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, "", "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg, username string) {
	// Keep the nonce of an earlier rendering: a second tab, or a stray
	// request the browser makes on its own, must not invalidate the form
	// already on the screen.
	nonce := randomString(18)
	if c, err := r.Cookie(s.cookieName(r, "grape_login")); err == nil && len(c.Value) == len(nonce) {
		nonce = c.Value
	}
	s.setCookie(w, r, "grape_login", nonce, 3600)
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostFormValue("next")
	}
	s.render(w, r, status, "login", view{Title: "Sign in", Data: loginData{
		Next: safeNext(next), CSRF: s.loginCSRF(nonce), Error: msg, Username: username,
		Token: s.auth.Token != "", Users: len(s.auth.Users) > 0, Supabase: s.auth.supabase(),
	}})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	ip := clientIP(r)
	if !s.sameOrigin(r) {
		s.errorPage(w, r, http.StatusForbidden, "This request came from another site and was refused.")
		return
	}
	c, err := r.Cookie(s.cookieName(r, "grape_login"))
	if err != nil || !validToken(r.PostFormValue("csrf"), s.loginCSRF(c.Value)) {
		s.errorPage(w, r, http.StatusForbidden, "The sign-in form's security token is missing or stale: open the sign-in page again.")
		return
	}
	if s.limiter.blocked(ip, now) {
		w.Header().Set("Retry-After", "60")
		s.renderLogin(w, r, http.StatusTooManyRequests, "Too many failed sign-ins from your address: wait a minute.", "")
		return
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	sess, msg := s.signIn(r.Context(), username, r.PostFormValue("password"), strings.TrimSpace(r.PostFormValue("token")), now)
	if sess == nil {
		s.limiter.fail(ip, now)
		s.log.Info("sign-in failed", "remote", ip, "user", username)
		s.renderLogin(w, r, http.StatusUnauthorized, msg, username)
		return
	}
	s.log.Info("signed in", "user", sess.User, "method", sess.Method, "remote", ip)
	s.setCookie(w, r, "grape_login", "", -1)
	s.setCookie(w, r, "grape_session", s.encodeSession(*sess), int(time.Until(time.Unix(sess.Expires, 0)).Seconds()))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	s.setCookie(w, r, "grape_session", "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (s *Server) user(r *http.Request) string {
	if sess := sessionFrom(r.Context()); sess != nil {
		return sess.User
	}
	return "unknown"
}

// queueDeployment is the deploy / plan / destroy buttons of a config.
func (s *Server) queueDeployment(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := s.config(r)
	if err != nil {
		return err
	}
	action, err := store.ParseAction(r.PostFormValue("action"))
	if err != nil || r.PostFormValue("action") == "" {
		return pageError{http.StatusBadRequest, "Choose plan, apply or destroy."}
	}
	if action == store.ActionDestroy && r.PostFormValue("confirm") != c.Name {
		return s.renderConfig(w, r, http.StatusBadRequest, c, fmt.Sprintf("%q is not the config's name: type %s exactly to confirm the destroy.", r.PostFormValue("confirm"), c.Name))
	}
	d, err := s.store(ctx).Enqueue(ctx, store.EnqueueParams{ClusterID: c.ClusterID, ConfigID: c.ID, Action: action, RequestedBy: s.user(r)})
	if err != nil {
		return err
	}
	s.log.Info("deployment queued", "deployment_id", d.ID, "config_id", c.ID, "cluster_id", c.ClusterID, "action", action, "user", s.user(r))
	http.Redirect(w, r, "/deployments/"+d.ID.String(), http.StatusSeeOther)
	return nil
}

// retry queues the same action for the same config again after a failed or
// cancelled run: the same commit when the run had one (a remediation), the
// approval gate never weaker than before. A destroy is confirmed again.
func (s *Server) retry(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := s.deploymentID(r)
	if err != nil {
		return err
	}
	d, err := s.store(ctx).GetDeployment(ctx, id)
	if err != nil {
		return err
	}
	if d.Status != store.StatusFailed && d.Status != store.StatusCancelled {
		return pageError{http.StatusConflict, fmt.Sprintf("Deployment %s is %s: only a failed or cancelled run can be retried.", d.ID, d.Status)}
	}
	c, err := s.store(ctx).GetConfigByID(ctx, d.ConfigID)
	if err != nil {
		return err
	}
	if d.Action == store.ActionDestroy && r.PostFormValue("confirm") != c.Name {
		return s.renderDeployment(w, r, http.StatusBadRequest, d, c, fmt.Sprintf("%q is not the config's name: type %s exactly to destroy again.", r.PostFormValue("confirm"), c.Name))
	}
	nd, err := s.store(ctx).Enqueue(ctx, store.EnqueueParams{
		ClusterID: d.ClusterID, ConfigID: d.ConfigID, Action: d.Action, RequireApproval: d.RequireApproval,
		SourceCommit: d.SourceCommit, MaxAttempts: d.MaxAttempts, RequestedBy: s.user(r),
	})
	if err != nil {
		return err
	}
	s.log.Info("deployment retried", "deployment_id", nd.ID, "retry_of", d.ID, "config_id", d.ConfigID, "action", d.Action, "user", s.user(r))
	http.Redirect(w, r, "/deployments/"+nd.ID.String(), http.StatusSeeOther)
	return nil
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request) error {
	return s.control(w, r, "approved", func(ctx context.Context, id uuid.UUID, by string) (store.Deployment, error) {
		return s.store(ctx).Approve(ctx, id, by, r.PostFormValue("comment"))
	})
}

func (s *Server) reject(w http.ResponseWriter, r *http.Request) error {
	return s.control(w, r, "rejected", func(ctx context.Context, id uuid.UUID, by string) (store.Deployment, error) {
		return s.store(ctx).Reject(ctx, id, by, r.PostFormValue("comment"))
	})
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) error {
	return s.control(w, r, "cancel requested", func(ctx context.Context, id uuid.UUID, by string) (store.Deployment, error) {
		return s.store(ctx).RequestCancel(ctx, id, by)
	})
}

// control runs approve, reject or cancel and goes back to the deployment.
func (s *Server) control(w http.ResponseWriter, r *http.Request, what string, op func(ctx context.Context, id uuid.UUID, by string) (store.Deployment, error)) error {
	id, err := s.deploymentID(r)
	if err != nil {
		return err
	}
	if _, err := op(r.Context(), id, s.user(r)); errors.Is(err, store.ErrApprovalRefused) {
		// The refusal ended the run (failed, as approval_refused): answer
		// here so the request's transaction keeps that.
		s.fail(w, r, err)
		return nil
	} else if err != nil {
		return err
	}
	s.log.Info("deployment "+what, "deployment_id", id, "user", s.user(r))
	http.Redirect(w, r, "/deployments/"+id.String(), http.StatusSeeOther)
	return nil
}

// remediate queues an apply of the commit a drift report checked, bringing
// the infrastructure back to what was last applied — if drift's rule allows
// it (the same rule the CLI and auto-remediation apply).
func (s *Server) remediate(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := uuid.Parse(r.PathValue("report"))
	if err != nil {
		return fmt.Errorf("drift report %q: %w", r.PathValue("report"), store.ErrNotFound)
	}
	report, err := s.store(ctx).GetDriftReport(ctx, id)
	if err != nil {
		return err
	}
	d, err := drift.Remediate(ctx, s.store(ctx), report, s.user(r))
	if err != nil {
		return err
	}
	s.log.Info("drift remediation queued", "deployment_id", d.ID, "config_id", report.ConfigID, "report_id", report.ID, "commit", *report.CommitSHA, "user", s.user(r))
	http.Redirect(w, r, "/deployments/"+d.ID.String(), http.StatusSeeOther)
	return nil
}

// checkDrift is "Check now": it queues a drift check of the config's last
// applied commit, as `grape drift check` and the schedule do.
func (s *Server) checkDrift(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, err := s.config(r)
	if err != nil {
		return err
	}
	cands, err := s.store(ctx).DriftCandidates(ctx, c.ClusterID)
	if err != nil {
		return err
	}
	var commit *string
	for _, cand := range cands {
		if cand.Config.ID == c.ID {
			commit = cand.LastAppliedCommit
		}
	}
	if commit == nil {
		return pageError{http.StatusConflict, fmt.Sprintf("Config %s was never applied: there is no commit to check for drift. Deploy it first.", c.Name)}
	}
	d, err := s.store(ctx).Enqueue(ctx, store.EnqueueParams{
		ClusterID: c.ClusterID, ConfigID: c.ID, Action: store.ActionDrift,
		SourceCommit: commit, RequestedBy: s.user(r), MaxAttempts: 1,
	})
	if err != nil {
		return err
	}
	s.log.Info("drift check queued", "deployment_id", d.ID, "config_id", c.ID, "cluster_id", c.ClusterID, "commit", *commit, "user", s.user(r))
	http.Redirect(w, r, "/deployments/"+d.ID.String(), http.StatusSeeOther)
	return nil
}

// validateSchedule checks a drift schedule as the agent reads it.
func validateSchedule(s string) error {
	if s == "off" {
		return nil
	}
	if _, err := cron.ParseStandard(s); err != nil {
		return fmt.Errorf("not a cron expression, @every duration or off: %w", err)
	}
	return nil
}
