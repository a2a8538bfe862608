package portal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors of JWT verification; the login page shows one sentence, the log the rest.
var (
	errJWTMalformed = errors.New("not a JWT")
	errJWTAlg       = errors.New("JWT is not signed with HS256")
	errJWTSignature = errors.New("JWT signature does not match the Supabase JWT secret")
	errJWTExpired   = errors.New("JWT has expired")
	errJWTNotUser   = errors.New("JWT is not a signed-in user's access token")
)

// jwtClaims are the Supabase access-token claims the portal reads.
type jwtClaims struct {
	Subject     string          `json:"sub"`
	Email       string          `json:"email"`
	Role        string          `json:"role"`
	Audience    json.RawMessage `json:"aud"` // a string or a list
	ExpiresAt   *float64        `json:"exp"`
	NotBefore   *float64        `json:"nbf"`
	IsAnonymous bool            `json:"is_anonymous"`
}

// user is the name the portal records: the email when there is one.
func (c jwtClaims) user() string {
	if c.Email != "" {
		return c.Email
	}
	return c.Subject
}

// looksLikeJWT tells a JWT from a static token without verifying anything.
func looksLikeJWT(s string) bool {
	return strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ")
}

// verifySupabaseJWT checks a Supabase Auth access token signed with the
// project's (legacy, symmetric) JWT secret and returns its claims. Only a
// signed-in user's token passes: the project's anon and service_role keys are
// JWTs signed with the same secret, and the anon key is public (it ships in
// every front end), so tokens without role "authenticated", audience
// "authenticated" and a subject are refused, as are anonymous sign-ins.
func verifySupabaseJWT(token string, secret []byte, now time.Time) (jwtClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return jwtClaims{}, errJWTMalformed
	}
	rawHeader, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return jwtClaims{}, fmt.Errorf("%w: header: %w", errJWTMalformed, err)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(rawHeader, &header); err != nil {
		return jwtClaims{}, fmt.Errorf("%w: header: %w", errJWTMalformed, err)
	}
	// The algorithm is fixed by configuration, never taken from the token
	// ("none" and RS256-with-the-secret-as-key are the classic forgeries).
	if header.Alg != "HS256" {
		return jwtClaims{}, fmt.Errorf("%w (alg %q)", errJWTAlg, header.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return jwtClaims{}, fmt.Errorf("%w: signature: %w", errJWTMalformed, err)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return jwtClaims{}, errJWTSignature
	}
	rawClaims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return jwtClaims{}, fmt.Errorf("%w: claims: %w", errJWTMalformed, err)
	}
	var c jwtClaims
	dec := json.NewDecoder(bytes.NewReader(rawClaims))
	if err := dec.Decode(&c); err != nil {
		return jwtClaims{}, fmt.Errorf("%w: claims: %w", errJWTMalformed, err)
	}
	const leeway = 30 * time.Second // clock skew between Supabase and this host
	if c.ExpiresAt == nil {
		return jwtClaims{}, fmt.Errorf("%w: no exp claim", errJWTNotUser)
	}
	if now.After(c.expiry().Add(leeway)) {
		return jwtClaims{}, errJWTExpired
	}
	if c.NotBefore != nil && now.Add(leeway).Before(time.Unix(int64(*c.NotBefore), 0)) {
		return jwtClaims{}, fmt.Errorf("%w: not valid yet (nbf)", errJWTNotUser)
	}
	if c.Role != "authenticated" || c.Subject == "" || !c.hasAudience("authenticated") {
		return jwtClaims{}, fmt.Errorf("%w: role %q, sub %q", errJWTNotUser, c.Role, c.Subject)
	}
	if c.IsAnonymous {
		return jwtClaims{}, fmt.Errorf("%w: anonymous sign-in", errJWTNotUser)
	}
	return c, nil
}

func (c jwtClaims) expiry() time.Time {
	if c.ExpiresAt == nil {
		return time.Time{}
	}
	return time.Unix(int64(*c.ExpiresAt), 0)
}

func (c jwtClaims) hasAudience(want string) bool {
	var one string
	if json.Unmarshal(c.Audience, &one) == nil {
		return one == want
	}
	var many []string
	if json.Unmarshal(c.Audience, &many) == nil {
		for _, a := range many {
			if a == want {
				return true
			}
		}
	}
	return false
}
