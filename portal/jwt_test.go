package portal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const testJWTSecret = "super-secret-jwt-token-with-at-least-32-characters-long"

// signJWT makes a token as Supabase Auth does (HS256 over header.claims).
func signJWT(t testing.TB, secret string, header, claims map[string]any) string {
	t.Helper()
	h, err := json.Marshal(header)
	require.NoError(t, err)
	c, err := json.Marshal(claims)
	require.NoError(t, err)
	unsigned := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(unsigned))
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func hsVerifier() *supabaseVerifier {
	return Auth{SupabaseJWTSecret: []byte(testJWTSecret)}.verifier()
}

func userClaims(now time.Time) map[string]any {
	return map[string]any{
		"sub": "8d0f5c3e-1111-4222-8333-944455556666", "email": "ada@example.com", "role": "authenticated",
		"aud": "authenticated", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
	}
}

func TestVerifySupabaseJWT(t *testing.T) {
	now := time.Now()
	hs := map[string]any{"alg": "HS256", "typ": "JWT"}
	with := func(mod func(map[string]any)) map[string]any {
		c := userClaims(now)
		mod(c)
		return c
	}
	cases := []struct {
		name  string
		token string
		want  error // nil: accepted
	}{
		{"user token", signJWT(t, testJWTSecret, hs, userClaims(now)), nil},
		{"audience as a list", signJWT(t, testJWTSecret, hs, with(func(c map[string]any) { c["aud"] = []string{"other", "authenticated"} })), nil},
		{"expired", signJWT(t, testJWTSecret, hs, with(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), errJWTExpired},
		{"wrong secret", signJWT(t, "another-projects-secret-another-projects-secret", hs, userClaims(now)), errJWTSignature},
		{"alg none", signJWT(t, testJWTSecret, map[string]any{"alg": "none"}, userClaims(now)), errJWTAlg},
		{"alg RS256", signJWT(t, testJWTSecret, map[string]any{"alg": "RS256"}, userClaims(now)), errJWTAlg},
		{"anon key", signJWT(t, testJWTSecret, hs, map[string]any{"iss": "supabase", "role": "anon", "exp": now.Add(time.Hour).Unix()}), errJWTNotUser},
		{"service_role key", signJWT(t, testJWTSecret, hs, map[string]any{"iss": "supabase", "role": "service_role", "exp": now.Add(time.Hour).Unix()}), errJWTNotUser},
		{"anonymous sign-in", signJWT(t, testJWTSecret, hs, with(func(c map[string]any) { c["is_anonymous"] = true })), errJWTNotUser},
		{"no exp", signJWT(t, testJWTSecret, hs, with(func(c map[string]any) { delete(c, "exp") })), errJWTNotUser},
		{"not yet valid", signJWT(t, testJWTSecret, hs, with(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), errJWTNotUser},
		{"wrong audience", signJWT(t, testJWTSecret, hs, with(func(c map[string]any) { c["aud"] = "somebody-else" })), errJWTNotUser},
		{"garbage", "eyJ.not.ajwt", errJWTMalformed},
		{"two parts", "eyJhbGciOiJIUzI1NiJ9.e30", errJWTMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			claims, err := hsVerifier().verify(t.Context(), c.token, now)
			if c.want == nil {
				require.NoError(t, err)
				require.Equal(t, "ada@example.com", claims.user())
				return
			}
			require.ErrorIs(t, err, c.want)
		})
	}
}

func TestTamperedJWTClaimsAreRefused(t *testing.T) {
	now := time.Now()
	tok := signJWT(t, testJWTSecret, map[string]any{"alg": "HS256"}, userClaims(now))
	parts := strings.Split(tok, ".")
	c := userClaims(now)
	c["email"] = "mallory@example.com"
	b, _ := json.Marshal(c)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	_, err := hsVerifier().verify(t.Context(), forged, now)
	require.ErrorIs(t, err, errJWTSignature)
}
