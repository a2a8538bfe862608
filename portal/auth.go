package portal

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
)

// Auth says who may sign in. At least one method must be set.
type Auth struct {
	// Token is a shared secret typed into the login form (recorded as user "token").
	Token string
	// TokenUser is the user id (a uuid, as memberships name users) the
	// token signs in as; its roles are its memberships (grape member add).
	TokenUser uuid.UUID
	// Users maps user names to their bcrypt hash and user id (LoadUsersFile).
	Users map[string]User
	// SupabaseJWTSecret verifies Supabase Auth access tokens signed with
	// the project's legacy secret (HS256).
	SupabaseJWTSecret []byte
	// SupabaseJWKSURL and SupabaseJWKSFile give the project's signing keys
	// (ES256, RS256): the URL is cached and read again when a token names
	// an unknown key; the file is for hosts that cannot reach Supabase.
	SupabaseJWKSURL, SupabaseJWKSFile string
	// SupabaseIssuer, when set, must equal the tokens' iss
	// (https://<ref>.supabase.co/auth/v1). SupabaseAudience defaults to
	// "authenticated".
	SupabaseIssuer, SupabaseAudience string
	// SupabaseAllow limits Supabase sign-ins to these emails and "@domain"
	// suffixes; empty lets every signed-in user of the project in.
	SupabaseAllow []string
}

func (a Auth) configured() bool {
	return a.Token != "" || len(a.Users) > 0 || a.supabase()
}

// checkIdentities: acting as the signed-in user needs to know who each
// sign-in is. Supabase tokens carry it (sub); the token and the users file
// are given one.
func (a Auth) checkIdentities(asOwner bool) error {
	if asOwner {
		return nil
	}
	if a.Token != "" && a.TokenUser == uuid.Nil {
		return errors.New("portal: the token signs in as a user id: set --token-user UUID (GRAPE_TOKEN_USER; e.g. from uuidgen) and give it roles with grape member add --user UUID")
	}
	var missing []string
	for name, u := range a.Users {
		if u.ID == uuid.Nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("portal: users file: %s: no user id; write each line as user:uuid:bcrypt-hash and give the id roles with grape member add --user UUID", strings.Join(missing, ", "))
	}
	return nil
}

func (a Auth) supabase() bool {
	return len(a.SupabaseJWTSecret) > 0 || a.SupabaseJWKSURL != "" || a.SupabaseJWKSFile != ""
}

func (a Auth) verifier() *supabaseVerifier {
	aud := a.SupabaseAudience
	if aud == "" {
		aud = "authenticated"
	}
	return &supabaseVerifier{secret: a.SupabaseJWTSecret, keys: newJWKSCache(a.SupabaseJWKSURL, a.SupabaseJWKSFile),
		issuer: a.SupabaseIssuer, audience: aud}
}

// Sign-in methods, recorded in the session.
const (
	methodToken    = "token"
	methodPassword = "password"
	methodSupabase = "supabase"
)

// User is one sign-in of the users file.
type User struct {
	Hash []byte
	// ID is who the user is to the database (memberships, auth.uid());
	// uuid.Nil when the line has none (only the legacy owner mode takes it).
	ID uuid.UUID
}

// LoadUsersFile reads `user:uuid:bcrypt-hash` lines (`user:bcrypt-hash`, as
// `htpasswd -nbB user pw` prints them, is read with no id). Blank lines and
// lines starting with # are skipped.
func LoadUsersFile(path string) (map[string]User, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading users file: %w", err)
	}
	defer f.Close()
	users, err := parseUsers(f)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return users, nil
}

func parseUsers(r io.Reader) (map[string]User, error) {
	users := map[string]User{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" || hash == "" {
			return nil, fmt.Errorf("line %d: want user:uuid:bcrypt-hash", n)
		}
		var id uuid.UUID
		// A bcrypt hash starts with $; anything else before the next
		// colon is the user's id.
		if rawID, rest, ok := strings.Cut(hash, ":"); ok && !strings.HasPrefix(hash, "$") {
			parsed, err := uuid.Parse(rawID)
			if err != nil {
				return nil, fmt.Errorf("line %d (user %s): %q is not a user id (a uuid, e.g. from uuidgen): want user:uuid:bcrypt-hash", n, name, rawID)
			}
			id, hash = parsed, rest
		}
		if strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, fmt.Errorf("line %d: user name %q has spaces or control characters", n, name)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			// Never echo the hash: the file is a secret.
			return nil, fmt.Errorf("line %d (user %s): not a bcrypt hash (create one with `htpasswd -nbB %s PASSWORD`): %w", n, name, name, err)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("line %d: user %s appears twice", n, name)
		}
		users[name] = User{Hash: []byte(hash), ID: id}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, errors.New("no users in it")
	}
	return users, nil
}

// session is what the signed cookie holds. It carries no secret: the cookie
// is signed, not encrypted.
type session struct {
	User   string `json:"u"`
	Method string `json:"m"`
	// Cred fingerprints the credential used, so changing the token, a
	// user's password or the JWT secret ends the sessions made with it.
	Cred    string `json:"c"`
	Expires int64  `json:"e"`
	// Nonce binds the CSRF token to this session.
	Nonce string `json:"n"`
	// UID is the user id the database knows the user by (auth.uid()):
	// the Supabase sub, or the id configured for the token or the users
	// file line. Org is the Supabase app_metadata.org_id.
	UID string `json:"i,omitempty"`
	Org string `json:"o,omitempty"`
}

type sessionKeyType struct{}

func sessionFrom(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKeyType{}).(*session)
	return s
}

func (s *Server) mac(purpose string, data []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(data)
	return m.Sum(nil)
}

func (s *Server) encodeSession(sess session) string {
	payload, _ := json.Marshal(sess)
	p := base64.RawURLEncoding.EncodeToString(payload)
	return p + "." + base64.RawURLEncoding.EncodeToString(s.mac("session", []byte(p)))
}

func (s *Server) decodeSession(v string, now time.Time) (*session, bool) {
	p, sig, ok := strings.Cut(v, ".")
	if !ok {
		return nil, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac("session", []byte(p))) {
		return nil, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return nil, false
	}
	var sess session
	if err := json.Unmarshal(payload, &sess); err != nil {
		return nil, false
	}
	if now.Unix() >= sess.Expires || sess.Cred != s.credential(sess.Method, sess.User) || sess.Cred == "" {
		return nil, false
	}
	if sess.UID == "" && !s.opts.ActAsOwner {
		return nil, false // made before the portal acted as its users: sign in again
	}
	return &sess, true
}

// credential fingerprints what a method checks against today; "" when the
// method (or the user) is no longer configured.
func (s *Server) credential(method, user string) string {
	var material []byte
	switch method {
	case methodToken:
		if s.auth.Token == "" {
			return ""
		}
		// A new identity for the token ends its sessions too.
		material = []byte(s.auth.TokenUser.String() + ":" + s.auth.Token)
	case methodPassword:
		u, ok := s.auth.Users[user]
		if !ok {
			return ""
		}
		material = append([]byte(user+":"+u.ID.String()+":"), u.Hash...)
	case methodSupabase:
		if !s.auth.supabase() {
			return ""
		}
		// Changing the secret or where the keys come from ends sessions.
		material = append(append([]byte(s.auth.SupabaseJWKSURL+"\x00"+s.auth.SupabaseJWKSFile+"\x00"+s.auth.SupabaseIssuer+"\x00"), s.auth.SupabaseJWTSecret...), 0)
	default:
		return ""
	}
	return hex.EncodeToString(s.mac("credential:"+method, material)[:12])
}

func (s *Server) csrfToken(sess *session) string {
	return base64.RawURLEncoding.EncodeToString(s.mac("csrf", []byte(sess.Nonce)))
}

func (s *Server) loginCSRF(nonce string) string {
	return base64.RawURLEncoding.EncodeToString(s.mac("login", []byte(nonce)))
}

func validToken(got, want string) bool {
	return got != "" && hmac.Equal([]byte(got), []byte(want))
}

// secure reports whether cookies must be Secure: served over TLS, or told so
// because a TLS-terminating proxy sits in front.
func (s *Server) secure(r *http.Request) bool { return r.TLS != nil || s.opts.SecureCookies }

func (s *Server) cookieName(r *http.Request, base string) string {
	if s.secure(r) {
		// __Host-: the browser refuses it unless Secure, Path=/ and no Domain,
		// so a sibling subdomain cannot plant one.
		return "__Host-" + base
	}
	return base
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, base, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     s.cookieName(r, base),
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   s.secure(r),
		SameSite: http.SameSiteStrictMode,
	})
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the OS is broken; nothing safe to do
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// currentSession returns the request's valid session, if any.
func (s *Server) currentSession(r *http.Request) *session {
	c, err := r.Cookie(s.cookieName(r, "grape_session"))
	if err != nil {
		return nil
	}
	sess, ok := s.decodeSession(c.Value, time.Now())
	if !ok {
		return nil
	}
	return sess
}

// authed wraps a handler: no session → the login page (GET) or 401; a
// state-changing request without the session's CSRF token → 403.
func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if bearer, ok := bearerToken(r); ok {
			// Scripts and CI: a Supabase access token on each request. No
			// cookie is involved, so there is nothing for CSRF to ride on.
			sess, msg := s.bearerSession(r.Context(), bearer, time.Now())
			if sess == nil {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				http.Error(w, msg, http.StatusUnauthorized)
				return
			}
			h(w, r.WithContext(context.WithValue(r.Context(), sessionKeyType{}, sess)))
			return
		}
		sess := s.currentSession(r)
		if sess == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				if r.Header.Get("Accept") == "text/event-stream" {
					http.Error(w, "sign in first", http.StatusUnauthorized)
					return
				}
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			s.errorPage(w, r, http.StatusUnauthorized, "Your session has ended: sign in again.")
			return
		}
		if !safeMethod(r.Method) {
			if !s.sameOrigin(r) {
				s.errorPage(w, r, http.StatusForbidden, "This request came from another site and was refused.")
				return
			}
			if !validToken(formOrHeaderCSRF(r), s.csrfToken(sess)) {
				s.errorPage(w, r, http.StatusForbidden, "The form's security token is missing or stale: reload the page and try again.")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKeyType{}, sess)))
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func formOrHeaderCSRF(r *http.Request) string {
	if v := r.Header.Get("X-CSRF-Token"); v != "" {
		return v
	}
	return r.PostFormValue("csrf")
}

// sameOrigin checks the Origin (or Referer) of a state-changing request when
// the browser sent one: defence in depth next to the CSRF token and the
// SameSite cookie.
func (s *Server) sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" {
		src = r.Header.Get("Referer")
	}
	switch src {
	case "":
		return true // non-browser clients; the CSRF token still has to match
	case "null":
		return false // a sandboxed or privacy-stripped context: not this site
	}
	u, err := url.Parse(src)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// loginLimiter slows down guessing: at most loginFailures failed sign-ins
// per client address per minute.
type loginLimiter struct {
	mu   sync.Mutex
	seen map[string]*failures
}

type failures struct {
	n     int
	since time.Time
}

const (
	loginFailures = 10
	loginWindow   = time.Minute
)

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (l *loginLimiter) blocked(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.seen[ip]
	return f != nil && now.Sub(f.since) < loginWindow && f.n >= loginFailures
}

func (l *loginLimiter) fail(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]*failures{}
	}
	if len(l.seen) > 10000 { // forget old entries rather than grow without bound
		for k, f := range l.seen {
			if now.Sub(f.since) >= loginWindow {
				delete(l.seen, k)
			}
		}
	}
	f := l.seen[ip]
	if f == nil || now.Sub(f.since) >= loginWindow {
		f = &failures{since: now}
		l.seen[ip] = f
	}
	f.n++
}

// dummyHash is compared against when the user name is unknown, so a wrong
// name costs as long as a wrong password and names cannot be probed. It is
// made on first use: every grape process links this package, and a bcrypt
// hash at start-up would cost each CLI call ~50 ms.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("grape-portal-no-such-user"), bcrypt.DefaultCost)
	return h
})

// signIn checks a login form and returns the session to create, or a
// message for the person.
func (s *Server) signIn(ctx context.Context, username, password, token string, now time.Time) (*session, string) {
	newSession := func(user, method string, exp time.Time, uid uuid.UUID) *session {
		sess := &session{User: user, Method: method, Cred: s.credential(method, user), Expires: exp.Unix(), Nonce: randomString(18)}
		if uid != uuid.Nil {
			sess.UID = uid.String()
		}
		return sess
	}
	ttlEnd := now.Add(s.opts.SessionTTL)
	switch {
	case username != "":
		if len(s.auth.Users) == 0 {
			return nil, "Sign-in with a user name is not enabled on this server."
		}
		u, ok := s.auth.Users[username]
		if !ok {
			_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
			return nil, "Wrong user name or password."
		}
		if bcrypt.CompareHashAndPassword(u.Hash, []byte(password)) != nil {
			return nil, "Wrong user name or password."
		}
		return newSession(username, methodPassword, ttlEnd, u.ID), ""
	case token == "":
		return nil, "Enter a user name and password, or a token."
	case looksLikeJWT(token) && s.supa.configured():
		claims, err := s.supa.verify(ctx, token, now)
		if err != nil {
			s.log.Info("Supabase sign-in refused", "err", err)
			switch {
			case errors.Is(err, errJWTExpired):
				return nil, "That Supabase access token has expired: sign in to Supabase again and use the new one."
			case errors.Is(err, errJWTNotUser):
				return nil, "That token is not a signed-in Supabase user's access token."
			default:
				return nil, "That Supabase access token is not valid for this project."
			}
		}
		if !s.supabaseAllowed(claims) {
			s.log.Info("Supabase sign-in refused: user not in --supabase-allow", "user", claims.user())
			return nil, "Your Supabase account is not allowed to use this portal."
		}
		// The session ends no later than the token: signing out of Supabase
		// (or an expired token) must not leave a longer-lived door open.
		exp := ttlEnd
		if e := claims.expiry(); e.Before(exp) {
			exp = e
		}
		sess := newSession(claims.user(), methodSupabase, exp, uuid.Nil)
		sess.UID, sess.Org = claims.Subject, claims.AppMetadata.OrgID
		return sess, ""
	case s.auth.Token != "" && hmac.Equal(sha(token), sha(s.auth.Token)):
		return newSession("token", methodToken, ttlEnd, s.auth.TokenUser), ""
	default:
		return nil, "Wrong token."
	}
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func (s *Server) supabaseAllowed(c jwtClaims) bool {
	if len(s.auth.SupabaseAllow) == 0 {
		return true
	}
	email := strings.ToLower(c.Email)
	for _, a := range s.auth.SupabaseAllow {
		a = strings.ToLower(strings.TrimSpace(a))
		switch {
		case a == "":
		case strings.HasPrefix(a, "@"):
			if email != "" && strings.HasSuffix(email, a) {
				return true
			}
		case a == email || a == strings.ToLower(c.Subject):
			return true
		}
	}
	return false
}

// safeNext keeps a post-login redirect on this site: a path, not "//host"
// or "/\host" (which browsers treat as another origin).
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}

// MinTokenLength and MinTokenBits bound a shared sign-in token. The estimate
// is length × log2(distinct characters): `openssl rand -hex 24` scores 192,
// "password1234567890" or a repeated character far less.
const (
	MinTokenLength = 16
	MinTokenBits   = 64
)

// ErrWeakToken: the shared token is too easy to guess for a portal that can
// deploy infrastructure.
var ErrWeakToken = errors.New("token too weak")

// CheckTokenStrength refuses a shared token that is short or made of few
// distinct characters; the message never echoes the token.
func CheckTokenStrength(token string) error {
	distinct := map[rune]bool{}
	for _, r := range token {
		distinct[r] = true
	}
	n := utf8.RuneCountInString(token)
	bits := float64(n) * math.Log2(float64(max(len(distinct), 1)))
	if n < MinTokenLength || bits < MinTokenBits {
		return fmt.Errorf("GRAPE_TOKEN: %w: %d characters, about %.0f bits; use at least %d characters and %d bits, e.g. GRAPE_TOKEN=\"$(openssl rand -hex 24)\"",
			ErrWeakToken, n, bits, MinTokenLength, MinTokenBits)
	}
	return nil
}

// bearerToken is the request's Authorization: Bearer credential, if any.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// bearerSession verifies a Supabase access token sent as a bearer token and
// returns a session for this request only.
func (s *Server) bearerSession(ctx context.Context, token string, now time.Time) (*session, string) {
	if !s.supa.configured() {
		return nil, "bearer tokens need Supabase sign-in (--supabase-jwt-secret or --supabase-jwks-url)"
	}
	claims, err := s.supa.verify(ctx, token, now)
	if err != nil {
		s.log.Info("bearer token refused", "err", err)
		return nil, "invalid or expired Supabase access token"
	}
	if !s.supabaseAllowed(claims) {
		return nil, "this Supabase account is not allowed to use this portal"
	}
	return &session{User: claims.user(), Method: methodSupabase, Expires: claims.expiry().Unix(), Nonce: randomString(18),
		UID: claims.Subject, Org: claims.AppMetadata.OrgID}, ""
}
