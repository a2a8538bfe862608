package portal

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// jwksServer serves a project's public keys and lets the test rotate them,
// counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T) *jwksServer {
	js := &jwksServer{}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.fetches.Add(1)
		js.mu.Lock()
		defer js.mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: js.keys})
	}))
	t.Cleanup(js.Close)
	return js
}

func (js *jwksServer) publish(keys ...jose.JSONWebKey) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.keys = keys
}

type signingKey struct {
	priv any
	kid  string
	alg  jose.SignatureAlgorithm
}

func newECKey(t *testing.T, kid string) signingKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return signingKey{k, kid, jose.ES256}
}

func newRSAKey(t *testing.T, kid string) signingKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return signingKey{k, kid, jose.RS256}
}

func (k signingKey) public() jose.JSONWebKey {
	var pub any
	switch p := k.priv.(type) {
	case *ecdsa.PrivateKey:
		pub = &p.PublicKey
	case *rsa.PrivateKey:
		pub = &p.PublicKey
	}
	return jose.JSONWebKey{Key: pub, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

func (k signingKey) sign(t *testing.T, claims map[string]any) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	require.NoError(t, err)
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	require.NoError(t, err)
	return tok
}

const testIssuer = "https://abcd.supabase.co/auth/v1"

func TestVerifySupabaseJWKS(t *testing.T) {
	now := time.Now()
	js := newJWKSServer(t)
	ec1, rsa2 := newECKey(t, "ec-1"), newRSAKey(t, "rsa-2")
	js.publish(ec1.public())
	v := Auth{SupabaseJWKSURL: js.URL, SupabaseJWTSecret: []byte(testJWTSecret), SupabaseIssuer: testIssuer}.verifier()
	v.keys.minRefresh = 0 // every unknown kid may refetch here
	claims := func(mod func(map[string]any)) map[string]any {
		c := userClaims(now)
		c["iss"] = testIssuer
		if mod != nil {
			mod(c)
		}
		return c
	}

	got, err := v.verify(t.Context(), ec1.sign(t, claims(nil)), now)
	require.NoError(t, err)
	require.Equal(t, "ada@example.com", got.user())
	require.EqualValues(t, 1, js.fetches.Load())
	_, err = v.verify(t.Context(), ec1.sign(t, claims(nil)), now)
	require.NoError(t, err)
	require.EqualValues(t, 1, js.fetches.Load(), "cached")

	// Supabase rotates to a new key: the unknown kid makes the portal read
	// the set again; the old key is gone with it.
	js.publish(rsa2.public())
	_, err = v.verify(t.Context(), rsa2.sign(t, claims(nil)), now)
	require.NoError(t, err)
	require.EqualValues(t, 2, js.fetches.Load())
	_, err = v.verify(t.Context(), ec1.sign(t, claims(nil)), now)
	require.ErrorIs(t, err, errJWTSignature, "a retired key no longer verifies")

	// Forgeries and wrong tokens.
	rsaPub := rsa2.priv.(*rsa.PrivateKey).Public()
	der, err := x509.MarshalPKIXPublicKey(rsaPub)
	require.NoError(t, err)
	pemKey := "-----BEGIN PUBLIC KEY-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END PUBLIC KEY-----\n"
	hsWithPublicKey := signJWT(t, pemKey, map[string]any{"alg": "HS256", "kid": "rsa-2", "typ": "JWT"}, claims(nil))
	unsignedNone := func() string {
		h, _ := json.Marshal(map[string]any{"alg": "none", "kid": "rsa-2"})
		c, _ := json.Marshal(claims(nil))
		return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
	}()
	stranger := newECKey(t, "rsa-2") // an attacker's key under a known kid
	for _, c := range []struct {
		name  string
		token string
		want  error
	}{
		{"expired", rsa2.sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })), errJWTExpired},
		{"wrong audience", rsa2.sign(t, claims(func(c map[string]any) { c["aud"] = "another-app" })), errJWTNotUser},
		{"wrong issuer", rsa2.sign(t, claims(func(c map[string]any) { c["iss"] = "https://evil.supabase.co/auth/v1" })), errJWTNotUser},
		{"not yet valid", rsa2.sign(t, claims(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), errJWTNotUser},
		{"service role", rsa2.sign(t, claims(func(c map[string]any) { c["role"] = "service_role" })), errJWTNotUser},
		{"alg none", unsignedNone, errJWTAlg},
		{"HS256 signed with the public key", hsWithPublicKey, errJWTSignature},
		{"another key under a known kid", stranger.sign(t, claims(nil)), errJWTSignature},
		{"unknown kid", newRSAKey(t, "rsa-9").sign(t, claims(nil)), errJWTSignature},
		{"legacy HS256 still works", signJWT(t, testJWTSecret, map[string]any{"alg": "HS256"}, claims(nil)), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.verify(t.Context(), c.token, now)
			if c.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, c.want)
		})
	}

	t.Run("without the legacy secret, HS256 is refused outright", func(t *testing.T) {
		v := Auth{SupabaseJWKSURL: js.URL}.verifier()
		_, err := v.verify(t.Context(), hsWithPublicKey, now)
		require.ErrorIs(t, err, errJWTAlg)
		_, err = v.verify(t.Context(), signJWT(t, testJWTSecret, map[string]any{"alg": "HS256"}, userClaims(now)), now)
		require.ErrorIs(t, err, errJWTAlg)
	})
	t.Run("unknown kids do not hammer the endpoint", func(t *testing.T) {
		v := Auth{SupabaseJWKSURL: js.URL}.verifier()
		before := js.fetches.Load()
		for i := range 20 {
			_, err := v.verify(t.Context(), newECKey(t, "forged-"+string(rune('a'+i))).sign(t, userClaims(now)), now)
			require.ErrorIs(t, err, errJWTSignature)
		}
		require.EqualValues(t, 1, js.fetches.Load()-before, "one fetch per refresh interval")
	})
	t.Run("offline JWKS file", func(t *testing.T) {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{ec1.public()}})
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "jwks.json")
		require.NoError(t, os.WriteFile(path, b, 0o600))
		v := Auth{SupabaseJWKSFile: path}.verifier()
		_, err = v.verify(t.Context(), ec1.sign(t, userClaims(now)), now)
		require.NoError(t, err)
	})
	t.Run("JWKS endpoint down", func(t *testing.T) {
		v := Auth{SupabaseJWKSURL: "http://127.0.0.1:1/jwks"}.verifier()
		_, err := v.verify(t.Context(), ec1.sign(t, userClaims(now)), now)
		require.ErrorIs(t, err, errJWTKeys)
		require.NotContains(t, err.Error(), "ada@", "no claims in the error")
	})
}

// TestBearerToken: scripts send a Supabase access token on each request;
// no cookie, so no CSRF token either.
func TestBearerToken(t *testing.T) {
	e := setup(t)
	now := time.Now()
	tok := signJWT(t, testJWTSecret, map[string]any{"alg": "HS256"}, userClaims(now))
	do := func(method, path, bearer string) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), method, e.ts.URL+path, nil)
		require.NoError(t, err)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/", tok).StatusCode)
	require.Equal(t, http.StatusSeeOther, do(http.MethodGet, "/", "").StatusCode, "no token: the sign-in page")
	expired := signJWT(t, testJWTSecret, map[string]any{"alg": "HS256"}, map[string]any{
		"sub": "8d0f5c3e-1111-4222-8333-944455556666", "role": "authenticated", "aud": "authenticated", "exp": now.Add(-time.Hour).Unix()})
	resp := do(http.MethodGet, "/", expired)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), "invalid_token")
	require.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/", "not-a-jwt").StatusCode)

	q := e.enqueue(e.newConfig("bearer"), store.EnqueueParams{})
	require.Equal(t, http.StatusSeeOther, do(http.MethodPost, "/deployments/"+q.ID.String()+"/cancel", tok).StatusCode)
	got := e.deployment(q.ID)
	require.Equal(t, store.StatusCancelled, got.Status)
	require.Equal(t, "ada@example.com", *got.CancelRequestedBy)
}

// TestFourEyesInThePortal: the portal's user queued it, so the portal's user
// cannot approve it; the database says so, and the page says why.
func TestFourEyesInThePortal(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	cfg := e.newConfig("four-eyes")
	want := e.enqueue(cfg, store.EnqueueParams{RequireApproval: true, RequestedBy: "token"})
	d, err := e.st.Claim(e.ctx, "eu-1", testAgent, time.Minute)
	require.NoError(t, err)
	require.Equal(t, want.ID, d.ID)
	require.NoError(t, e.st.AwaitApproval(e.ctx, d.ID, testAgent))
	resp, body := c.post("/deployments/"+d.ID.String()+"/approve", nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Contains(t, html.UnescapeString(body), "token requested this deployment and cannot also approve it (four eyes)")
	require.Nil(t, e.deployment(d.ID).ApprovedAt)
}

// TestAuditPage: what the database recorded, shown to a signed-in user.
func TestAuditPage(t *testing.T) {
	e := setup(t)
	c := e.signedIn()
	q := e.enqueue(e.newConfig("audited"), store.EnqueueParams{RequestedBy: "token"})
	resp, _ := c.post("/deployments/"+q.ID.String()+"/cancel", nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	code, page := c.get("/audit?cluster=eu-1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, "<code>deployment.queued</code>")
	require.Contains(t, page, "<code>deployment.cancelled</code>")
	require.Contains(t, page, "<td>token</td>", "the portal's user, from cancel_requested_by")
	require.Contains(t, page, "<code>"+q.ID.String()+"</code>")
}
