package portal

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

func TestParseUsers(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	users, err := parseUsers(strings.NewReader("# admins\n\nalice:" + string(hash) + "\n  bob:a11ce000-0000-4000-8000-00000000000b:" + string(hash) + "  \n"))
	require.NoError(t, err)
	require.Len(t, users, 2)
	require.NoError(t, bcrypt.CompareHashAndPassword(users["bob"].Hash, []byte("pw")))
	require.Equal(t, "a11ce000-0000-4000-8000-00000000000b", users["bob"].ID.String())
	require.Equal(t, uuid.Nil, users["alice"].ID, "an htpasswd line has no id (only --legacy-as-owner takes it)")

	bad := []struct{ in, want string }{
		{"alice", "line 1: want user:uuid:bcrypt-hash"},
		{"alice:not-a-uuid:" + string(hash), `"not-a-uuid" is not a user id`},
		{"alice:plaintext", "not a bcrypt hash"},
		{"alice:" + string(hash) + "\nalice:" + string(hash), "appears twice"},
		{"al ice:" + string(hash), "spaces or control characters"},
		{"# nobody\n", "no users"},
	}
	for _, b := range bad {
		_, err := parseUsers(strings.NewReader(b.in))
		require.ErrorContains(t, err, b.want, b.in)
		require.NotContains(t, err.Error(), "plaintext", "a users file error must not echo the secret")
	}
}

func testServerForAuth(t *testing.T) *Server {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	require.NoError(t, err)
	auth := Auth{Token: "tok", TokenUser: testTokenUser, Users: map[string]User{"alice": {Hash: hash, ID: testAliceID}}, SupabaseJWTSecret: []byte(testJWTSecret)}
	return &Server{
		opts: Options{SessionTTL: time.Hour},
		auth: auth,
		supa: auth.verifier(),
		key:  []byte("0123456789abcdef0123456789abcdef"),
		log:  discardLogger(),
	}
}

func TestSessionCookieRoundTripAndTampering(t *testing.T) {
	s := testServerForAuth(t)
	now := time.Now()
	sess, msg := s.signIn(t.Context(), "alice", "correct horse", "", now)
	require.Empty(t, msg)
	v := s.encodeSession(*sess)
	got, ok := s.decodeSession(v, now)
	require.True(t, ok)
	require.Equal(t, "alice", got.User)
	require.Equal(t, testAliceID.String(), got.UID, "the session acts as alice's configured id")
	s.auth.Users = map[string]User{"alice": {Hash: s.auth.Users["alice"].Hash, ID: uuid.New()}}
	_, ok = s.decodeSession(v, now)
	require.False(t, ok, "a new id for alice ends the sessions made as the old one")
	s.auth.Users = map[string]User{"alice": {Hash: s.auth.Users["alice"].Hash, ID: testAliceID}}
	old := *sess
	old.UID = ""
	_, ok = s.decodeSession(s.encodeSession(old), now)
	require.False(t, ok, "a session from before the portal acted as its users names nobody: sign in again")

	payload, sig, _ := strings.Cut(v, ".")
	cases := map[string]string{
		"no signature":          payload,
		"flipped signature":     payload + "." + strings.ToUpper(sig[:1]) + sig[1:] + "x",
		"other payload":         strings.Replace(v, payload, payload[:len(payload)-2]+"AA", 1),
		"empty":                 "",
		"signed by another key": (&Server{key: []byte("other key"), auth: s.auth}).encodeSession(*sess),
	}
	for name, c := range cases {
		_, ok := s.decodeSession(c, now)
		require.False(t, ok, name)
	}
	_, ok = s.decodeSession(v, now.Add(2*time.Hour))
	require.False(t, ok, "expired session")

	// Changing the user's password ends the sessions made with the old one.
	newHash, _ := bcrypt.GenerateFromPassword([]byte("new"), bcrypt.MinCost)
	s.auth.Users = map[string]User{"alice": {Hash: newHash, ID: testAliceID}}
	_, ok = s.decodeSession(v, now)
	require.False(t, ok, "session outlived a password change")
}

func TestSignIn(t *testing.T) {
	s := testServerForAuth(t)
	now := time.Now()
	jwt := signJWT(t, testJWTSecret, map[string]any{"alg": "HS256"}, userClaims(now))
	cases := []struct {
		name, user, pass, token string
		wantUser, wantMethod    string
	}{
		{"token", "", "", "tok", "token", methodToken},
		{"wrong token", "", "", "tok2", "", ""},
		{"password", "alice", "correct horse", "", "alice", methodPassword},
		{"wrong password", "alice", "wrong", "", "", ""},
		{"unknown user", "mallory", "correct horse", "", "", ""},
		{"supabase", "", "", jwt, "ada@example.com", methodSupabase},
		{"nothing", "", "", "", "", ""},
	}
	for _, c := range cases {
		sess, msg := s.signIn(t.Context(), c.user, c.pass, c.token, now)
		if c.wantUser == "" {
			require.Nil(t, sess, c.name)
			require.NotEmpty(t, msg, c.name)
			continue
		}
		require.NotNil(t, sess, "%s: %s", c.name, msg)
		require.Equal(t, c.wantUser, sess.User, c.name)
		require.Equal(t, c.wantMethod, sess.Method, c.name)
	}
	// A Supabase session ends when its token does.
	sess, _ := s.signIn(t.Context(), "", "", jwt, now)
	require.LessOrEqual(t, sess.Expires, now.Add(time.Hour).Unix())

	s.auth.SupabaseAllow = []string{"@grape.example"}
	sess, msg := s.signIn(t.Context(), "", "", jwt, now)
	require.Nil(t, sess)
	require.Contains(t, msg, "not allowed")
	s.auth.SupabaseAllow = []string{"someone@else.com", "@EXAMPLE.com"}
	sess, _ = s.signIn(t.Context(), "", "", jwt, now)
	require.NotNil(t, sess)
}

func TestSafeNext(t *testing.T) {
	cases := map[string]string{
		"":                     "/",
		"/deployments/x":       "/deployments/x",
		"//evil.example":       "/",
		"/\\evil.example":      "/",
		"https://evil.example": "/",
		"/ok?a=1":              "/ok?a=1",
		"/x\r\nSet-Cookie: a":  "/",
	}
	for in, want := range cases {
		require.Equal(t, want, safeNext(in), in)
	}
}

func TestLoginLimiter(t *testing.T) {
	var l loginLimiter
	now := time.Now()
	for i := 0; i < loginFailures; i++ {
		require.False(t, l.blocked("10.0.0.1", now))
		l.fail("10.0.0.1", now)
	}
	require.True(t, l.blocked("10.0.0.1", now))
	require.False(t, l.blocked("10.0.0.2", now), "another address is not blocked")
	require.False(t, l.blocked("10.0.0.1", now.Add(loginWindow)), "the block lifts after the window")
}

func TestCheckTokenStrength(t *testing.T) {
	for _, c := range []struct {
		token string
		ok    bool
	}{
		{"t", false},
		{"password", false},
		{strings.Repeat("a", 64), false},
		{"abababababababababababababababab", false},
		{"serve-test-token", false},
		{"9f1c2e7a4b8d3f60a5c7e9b1d2f4a6c8", true},
		{"correct-horse-battery-staple-42!", true},
	} {
		err := CheckTokenStrength(c.token)
		if c.ok {
			require.NoError(t, err, c.token)
			continue
		}
		require.ErrorIs(t, err, ErrWeakToken, c.token)
		if len(c.token) >= 8 {
			require.NotContains(t, err.Error(), c.token, "the message never echoes the token")
		}
	}
}
