package portal

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Errors of JWT verification; the login page shows one sentence, the log the rest.
var (
	errJWTMalformed = errors.New("not a JWT")
	errJWTAlg       = errors.New("JWT is not signed with an algorithm this portal accepts")
	errJWTSignature = errors.New("JWT signature does not match the Supabase project's keys")
	errJWTExpired   = errors.New("JWT has expired")
	errJWTNotUser   = errors.New("JWT is not a signed-in user's access token")
	errJWTKeys      = errors.New("the Supabase signing keys (JWKS) could not be read")
)

// jwtClaims are the Supabase access-token claims the portal reads besides
// the registered ones.
type jwtClaims struct {
	jwt.Claims
	Email       string `json:"email"`
	Role        string `json:"role"`
	IsAnonymous bool   `json:"is_anonymous"`
	// AppMetadata is only writable by the project's service role, so its
	// org_id can be trusted (user_metadata cannot).
	AppMetadata struct {
		OrgID string `json:"org_id"`
	} `json:"app_metadata"`
}

// user is the name the portal records: the email when there is one.
func (c jwtClaims) user() string {
	if c.Email != "" {
		return c.Email
	}
	return c.Subject
}

func (c jwtClaims) expiry() time.Time {
	if c.Expiry == nil {
		return time.Time{}
	}
	return c.Expiry.Time()
}

// looksLikeJWT tells a JWT from a static token without verifying anything.
func looksLikeJWT(s string) bool {
	return strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ")
}

// supabaseVerifier checks Supabase Auth access tokens: HS256 with the
// project's legacy JWT secret, and ES256/RS256 with the project's signing
// keys (JWKS). Which key verifies a token follows from the algorithm the
// configuration allows for it, never from the token alone: an HS256 token is
// checked with the secret only (so one "signed" with a public key, the
// classic key confusion, fails), an asymmetric one with a JWKS key of the
// matching type only, and "none" is never accepted.
type supabaseVerifier struct {
	secret   []byte
	keys     *jwksCache // nil: no asymmetric keys
	issuer   string     // "" : not checked
	audience string
}

func (v *supabaseVerifier) configured() bool {
	return v != nil && (len(v.secret) > 0 || v.keys != nil)
}

func (v *supabaseVerifier) algorithms() []jose.SignatureAlgorithm {
	var algs []jose.SignatureAlgorithm
	if len(v.secret) > 0 {
		algs = append(algs, jose.HS256)
	}
	if v.keys != nil {
		algs = append(algs, jose.ES256, jose.RS256)
	}
	return algs
}

// verify returns the claims of a signed-in user's token. Only such a token
// passes: the project's anon and service_role keys are JWTs too, and the
// anon key is public (it ships in every front end), so tokens without role
// "authenticated", the audience, a subject and an expiry are refused, as are
// anonymous sign-ins.
func (v *supabaseVerifier) verify(ctx context.Context, token string, now time.Time) (jwtClaims, error) {
	tok, err := jwt.ParseSigned(token, v.algorithms())
	if err != nil {
		if strings.Contains(err.Error(), "unexpected signature algorithm") {
			return jwtClaims{}, fmt.Errorf("%w: %w", errJWTAlg, err)
		}
		return jwtClaims{}, fmt.Errorf("%w: %w", errJWTMalformed, err)
	}
	if len(tok.Headers) != 1 {
		return jwtClaims{}, fmt.Errorf("%w: want one signature", errJWTMalformed)
	}
	h := tok.Headers[0]
	var key any
	switch jose.SignatureAlgorithm(h.Algorithm) {
	case jose.HS256:
		key = v.secret
	case jose.ES256, jose.RS256:
		key, err = v.keys.key(ctx, h.KeyID, h.Algorithm)
		if err != nil {
			return jwtClaims{}, err
		}
	default:
		return jwtClaims{}, fmt.Errorf("%w (alg %q)", errJWTAlg, h.Algorithm)
	}
	var c jwtClaims
	if err := tok.Claims(key, &c); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return jwtClaims{}, errJWTSignature
		}
		return jwtClaims{}, fmt.Errorf("%w: claims: %w", errJWTMalformed, err)
	}
	const leeway = 30 * time.Second // clock skew between Supabase and this host
	if c.Expiry == nil {
		return jwtClaims{}, fmt.Errorf("%w: no exp claim", errJWTNotUser)
	}
	err = c.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.audience}, Time: now}, leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return jwtClaims{}, errJWTExpired
	case err != nil:
		return jwtClaims{}, fmt.Errorf("%w: %w", errJWTNotUser, err)
	}
	if c.Role != "authenticated" || c.Subject == "" {
		return jwtClaims{}, fmt.Errorf("%w: role %q, sub %q", errJWTNotUser, c.Role, c.Subject)
	}
	if c.IsAnonymous {
		return jwtClaims{}, fmt.Errorf("%w: anonymous sign-in", errJWTNotUser)
	}
	return c, nil
}

// jwksCache holds a project's signing keys, read from a URL (cached, and
// read again when a token names a key it does not hold: Supabase rotates
// keys) or from a file (offline set-ups).
type jwksCache struct {
	url, file string
	client    *http.Client
	// minRefresh bounds how often an unknown kid may cause a fetch, so a
	// stream of forged kids cannot turn the portal into a request cannon.
	minRefresh time.Duration
	maxAge     time.Duration

	mu      sync.Mutex
	set     jose.JSONWebKeySet
	fetched time.Time
}

func newJWKSCache(url, file string) *jwksCache {
	if url == "" && file == "" {
		return nil
	}
	return &jwksCache{url: url, file: file, client: &http.Client{Timeout: 10 * time.Second},
		minRefresh: 30 * time.Second, maxAge: 10 * time.Minute}
}

// key finds the public key for kid, refreshing the set when it is stale or
// does not hold kid. The key's type must match alg.
func (c *jwksCache) key(ctx context.Context, kid, alg string) (any, error) {
	if c == nil {
		return nil, fmt.Errorf("%w (alg %q without --supabase-jwks-url/--supabase-jwks-file)", errJWTAlg, alg)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	k, found := c.lookup(kid)
	if (!found && now.Sub(c.fetched) >= c.minRefresh) || now.Sub(c.fetched) >= c.maxAge {
		if err := c.load(ctx); err != nil {
			if !found {
				return nil, err
			}
			// Keep using a key already held while the endpoint is down.
		} else {
			c.fetched = now
			k, found = c.lookup(kid)
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: no signing key with kid %q", errJWTSignature, kid)
	}
	if k.Algorithm != "" && k.Algorithm != alg {
		return nil, fmt.Errorf("%w: key %q is for %s, token says %s", errJWTSignature, kid, k.Algorithm, alg)
	}
	switch pub := k.Key.(type) {
	case *ecdsa.PublicKey:
		if alg == string(jose.ES256) {
			return pub, nil
		}
	case *rsa.PublicKey:
		if alg == string(jose.RS256) {
			return pub, nil
		}
	}
	return nil, fmt.Errorf("%w: key %q (%T) cannot verify %s", errJWTSignature, kid, k.Key, alg)
}

func (c *jwksCache) lookup(kid string) (jose.JSONWebKey, bool) {
	for _, k := range c.set.Keys {
		if k.KeyID == kid && k.IsPublic() && (k.Use == "" || k.Use == "sig") {
			return k, true
		}
	}
	return jose.JSONWebKey{}, false
}

func (c *jwksCache) load(ctx context.Context) error {
	var body []byte
	var err error
	if c.file != "" {
		body, err = os.ReadFile(c.file)
	} else {
		body, err = c.fetch(ctx)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errJWTKeys, err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("%w: %w", errJWTKeys, err)
	}
	c.set = set
	return nil
}

func (c *jwksCache) fetch(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", c.url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}
