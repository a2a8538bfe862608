package portal

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/internal/ptr"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/store"
	"github.com/grapehq/grape/store/notify"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Options configure a Server.
type Options struct {
	Store *store.Store
	// Notifier is the process's LISTEN connection; nil: the portal opens
	// one of its own on ConnString.
	Notifier *notify.Notifier
	// ConnString is the database URL for the portal's own LISTEN connection.
	ConnString string
	// Catalog validates intents in the config editor; nil: render.Default().
	Catalog *render.Catalog
	Auth    Auth
	// ActAsOwner is the legacy mode: every sign-in acts with the database
	// URL's own rights (the owner sees and may do everything), and roles
	// per cluster do not apply in the portal. Off: each request runs as its
	// signed-in user (act.go).
	ActAsOwner bool
	// CommitURL links commit SHAs to the customer's git server; "{sha}" is
	// replaced by the full SHA. Empty: SHAs are shown without a link.
	CommitURL string
	// SecureCookies marks cookies Secure even on plain HTTP (TLS terminated
	// by a proxy in front). Requests served over TLS always get Secure cookies.
	SecureCookies bool
	// SessionSecret signs session cookies and CSRF tokens. Empty: a random
	// key, so sessions end when the server restarts.
	SessionSecret []byte
	// SessionTTL is how long a sign-in lasts (default 12h).
	SessionTTL time.Duration
	// AgentOfflineAfter: an agent whose last heartbeat is older is shown
	// offline (default 30s; agents beat every 10s).
	AgentOfflineAfter time.Duration
	// StatusPoll is how often an open live terminal re-reads its
	// deployment's status (default 500ms): status changes are not notified.
	StatusPoll time.Duration
	Logger     *slog.Logger
}

// Server is the portal: an http.Handler whose live terminals are fed by
// the process's one LISTEN connection (Run keeps it up).
type Server struct {
	opts     Options
	st       *store.Store
	catalog  *render.Catalog
	auth     Auth
	supa     *supabaseVerifier
	key      []byte
	log      *slog.Logger
	notifier *notify.Notifier
	limiter  loginLimiter
	pages    map[string]*template.Template
	static   map[string]staticFile
	mux      *http.ServeMux
}

type staticFile struct {
	body        []byte
	contentType string
	etag        string
}

// New builds the portal. Call Run to feed live terminals.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("portal: a store is required")
	}
	if opts.Notifier == nil && opts.ConnString == "" {
		return nil, errors.New("portal: a database URL for LISTEN is required")
	}
	if !opts.Auth.configured() {
		return nil, errors.New("portal: no sign-in method: set a token, a users file, a Supabase JWT secret or Supabase signing keys (JWKS)")
	}
	if err := opts.Auth.checkIdentities(opts.ActAsOwner); err != nil {
		return nil, err
	}
	if err := checkCommitURL(opts.CommitURL); err != nil {
		return nil, err
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.AgentOfflineAfter <= 0 {
		opts.AgentOfflineAfter = 30 * time.Second
	}
	if opts.StatusPoll <= 0 {
		opts.StatusPoll = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, st: opts.Store, auth: opts.Auth, supa: opts.Auth.verifier(), log: opts.Logger, catalog: opts.Catalog}
	if s.catalog == nil {
		c, err := render.Default()
		if err != nil {
			return nil, fmt.Errorf("portal: %w", err)
		}
		s.catalog = c
	}
	if len(opts.SessionSecret) > 0 {
		s.key = sha(string(opts.SessionSecret))
	} else {
		s.key = []byte(randomString(32))
	}
	s.notifier = opts.Notifier
	if s.notifier == nil {
		n, err := notify.New(opts.ConnString, notify.Options{Name: "grape-portal-listener", Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("portal: %w", err)
		}
		s.notifier = n
	}
	if err := s.loadAssets(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// checkCommitURL refuses a link template that is not http(s) or has no {sha}.
func checkCommitURL(t string) error {
	if t == "" {
		return nil
	}
	if !strings.Contains(t, "{sha}") {
		return fmt.Errorf("portal: commit URL %q has no {sha} placeholder", t)
	}
	u, err := url.Parse(strings.ReplaceAll(t, "{sha}", "0"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("portal: commit URL %q is not an http(s) URL", t)
	}
	return nil
}

// Run keeps the LISTEN connection that feeds live terminals up until ctx
// ends, so opening a terminal does not wait for a connection.
func (s *Server) Run(ctx context.Context) error {
	release := s.notifier.Hold()
	defer release()
	<-ctx.Done()
	return nil
}

func (s *Server) loadAssets() error {
	s.static = map[string]staticFile{}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	err := fs.WalkDir(staticFiles, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		s.static[strings.TrimPrefix(p, "static/")] = staticFile{body: b, contentType: types[path.Ext(p)], etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return fmt.Errorf("portal: reading embedded assets: %w", err)
	}
	funcs := template.FuncMap{
		"ansi":      ANSISegments,
		"diagClass": diagClass,
		"short":     shortSHA,
		"commitURL": s.commitURL,
		"when":      formatTime,
		"whenp":     formatTimePtr,
		"deref":     derefAny,
		"asset":     s.assetURL,
		"join":      strings.Join,
		"add":       func(a, b int) int { return a + b },
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html")
	if err != nil {
		return fmt.Errorf("portal: parsing layout: %w", err)
	}
	entries, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return err
	}
	s.pages = map[string]*template.Template{}
	for _, e := range entries {
		name := path.Base(e)
		if name == "layout.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFiles, e)
		if err != nil {
			return fmt.Errorf("portal: parsing %s: %w", name, err)
		}
		s.pages[strings.TrimSuffix(name, ".html")] = t
	}
	return nil
}

// assetURL names an embedded asset with its content hash, so a new binary's
// assets are never mixed with a cached old one.
func (s *Server) assetURL(name string) string {
	f := s.static[name]
	return "/static/" + name + "?v=" + strings.Trim(f.etag, `"`)
}

func (s *Server) commitURL(sha string) string {
	if s.opts.CommitURL == "" || !isSHA(sha) {
		return ""
	}
	return strings.ReplaceAll(s.opts.CommitURL, "{sha}", sha)
}

func isSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func formatTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return formatTime(*t)
}

// derefAny is ptr.Deref for templates, which cannot call generic functions.
func derefAny(p any) string {
	switch v := p.(type) {
	case *string:
		return ptr.Deref(v)
	case *store.Phase:
		return string(ptr.Deref(v))
	case *store.ErrorKind:
		return string(ptr.Deref(v))
	case string:
		return v
	}
	return ""
}

// contentSecurityPolicy allows only this server's own scripts, styles and
// connections: no inline script can run even if some markup slipped through.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// ServeHTTP adds the security headers to every response and routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		h.Set("Cache-Control", "no-store")
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	}
	s.mux.ServeHTTP(w, r)
}

// maxFormBytes bounds a request body: an intent is at most 1 MiB.
const maxFormBytes = 2 << 20

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	m.HandleFunc("GET /static/{file}", s.serveStatic)
	// Browsers ask for it on their own; answer without a sign-in redirect.
	m.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, s.assetURL("favicon.svg"), http.StatusMovedPermanently)
	})
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.authed(s.logout))

	// The pages and actions return their errors; handle turns them into
	// status pages, in one place (fail).
	page := func(h handler) http.HandlerFunc { return s.authed(s.handle(h)) }
	m.HandleFunc("GET /{$}", page(s.clustersPage))
	m.HandleFunc("GET /clusters/{cluster}", page(s.clusterPage))
	m.HandleFunc("GET /clusters/{cluster}/new-config", page(s.newConfigPage))
	m.HandleFunc("POST /clusters/{cluster}/configs", page(s.createConfig))
	m.HandleFunc("GET /clusters/{cluster}/configs/{name}", page(s.configPage))
	m.HandleFunc("GET /clusters/{cluster}/configs/{name}/edit", page(s.editConfigPage))
	m.HandleFunc("POST /clusters/{cluster}/configs/{name}", page(s.saveConfig))
	m.HandleFunc("POST /clusters/{cluster}/configs/{name}/deployments", page(s.queueDeployment))
	m.HandleFunc("POST /clusters/{cluster}/configs/{name}/drift-check", page(s.checkDrift))

	m.HandleFunc("GET /deployments", page(s.deploymentsPage))
	m.HandleFunc("GET /deployments/{id}", page(s.deploymentPage))
	m.HandleFunc("GET /deployments/{id}/events", s.authed(s.stream(s.deploymentEvents)))
	m.HandleFunc("GET /deployments/{id}/log", s.authed(s.stream(s.deploymentLogText)))
	m.HandleFunc("POST /deployments/{id}/approve", page(s.approve))
	m.HandleFunc("POST /deployments/{id}/reject", page(s.reject))
	m.HandleFunc("POST /deployments/{id}/cancel", page(s.cancel))
	m.HandleFunc("POST /deployments/{id}/retry", page(s.retry))

	m.HandleFunc("GET /drift", page(s.driftPage))
	m.HandleFunc("GET /audit", page(s.auditPage))
	m.HandleFunc("POST /drift/{report}/remediate", page(s.remediate))

	m.HandleFunc("/", s.authed(func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, r, http.StatusNotFound, "There is no page at this address.")
	}))
	s.mux = m
}

func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := s.static[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("ETag", f.etag)
	// The URL carries the content hash (assetURL), so it may be cached for long.
	w.Header().Set("Cache-Control", "public, max-age=86400")
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(f.body)
}

// view is what every page template gets.
type view struct {
	Title string
	User  string
	// UserID is who the portal acts as ("" in the legacy owner mode): a
	// user with no role is told which id to give one.
	UserID string
	CSRF   string
	Nav    string // which top-level section is current
	Data   any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	t, ok := s.pages[name]
	if !ok {
		s.log.Error("no such page template", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if sess := sessionFrom(r.Context()); sess != nil {
		v.User = sess.User
		if !s.opts.ActAsOwner {
			v.UserID = sess.UID
		}
		v.CSRF = s.csrfToken(sess)
	}
	// Render to a buffer first: a template error must not leave half a page
	// under a 200 status.
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		s.log.Error("rendering page failed", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

type errorData struct {
	Status  int
	Heading string
	Message string
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error", view{Title: http.StatusText(status), Data: errorData{Status: status, Heading: http.StatusText(status), Message: msg}})
}

// handler is a page or action that returns its error instead of writing it.
type handler func(w http.ResponseWriter, r *http.Request) error

// pageError is a refusal a handler words itself: its status and the
// sentence the error page shows.
type pageError struct {
	status  int
	message string
}

func (e pageError) Error() string { return fmt.Sprintf("%d: %s", e.status, e.message) }

// fail turns an error into the right page: unknown ids are 404, requests
// the current state does not allow are 409, everything else is logged and
// shown as 500 without its details.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var notRemediable *drift.NotRemediableError
	var refusal pageError
	switch {
	case errors.As(err, &refusal):
		s.errorPage(w, r, refusal.status, refusal.message)
	case errors.Is(err, store.ErrNotFound):
		s.errorPage(w, r, http.StatusNotFound, "Nothing was found with that name or id.")
	case errors.As(err, &notRemediable):
		s.errorPage(w, r, http.StatusConflict, "Not remediated: "+notRemediable.Reason+".")
	case errors.Is(err, store.ErrWrongState), errors.Is(err, store.ErrApprovalRefused):
		s.errorPage(w, r, http.StatusConflict, firstSentence(err))
	case errors.Is(err, store.ErrInvalid):
		s.errorPage(w, r, http.StatusBadRequest, firstSentence(err))
	case errors.Is(err, store.ErrForbidden):
		// The database's rule (four eyes, a role) says why and what to do.
		msg := strings.TrimSuffix(err.Error(), ": "+store.ErrForbidden.Error())
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			msg = rest
		}
		s.errorPage(w, r, http.StatusForbidden, msg)
	case errors.Is(err, context.Canceled):
		// The browser went away; nobody reads the answer.
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		s.errorPage(w, r, http.StatusInternalServerError, "Something went wrong on the server; the details are in its log.")
	}
}

// firstSentence strips the "verb-ing noun:" wrapping a store error carries
// down to what a person can act on.
func firstSentence(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": deployment "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}
