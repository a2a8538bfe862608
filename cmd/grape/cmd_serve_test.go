package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/grapehq/grape/internal/testsupport"
)

// lockedBuffer is a bytes.Buffer safe to read while the command writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestServeFlagErrors(t *testing.T) {
	t.Parallel()
	db := testsupport.DatabaseURL(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	users := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:"+strongTokenUser+":"+string(hash)+"\n"), 0o600))
	noIDs := filepath.Join(t.TempDir(), "htpasswd")
	require.NoError(t, os.WriteFile(noIDs, []byte("alice:"+string(hash)+"\n"), 0o600))
	tok := map[string]string{"GRAPE_TOKEN": strongToken, "GRAPE_TOKEN_USER": strongTokenUser}
	badUsers := filepath.Join(t.TempDir(), "bad-users")
	require.NoError(t, os.WriteFile(badUsers, []byte("alice:secret-in-clear\n"), 0o600))
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"no sign-in method", nil, nil, 2, "no sign-in method"},
		{"one-character token", map[string]string{"GRAPE_TOKEN": "t"}, nil, 2, "GRAPE_TOKEN: token too weak: 1 characters"},
		{"long token of one character", map[string]string{"GRAPE_TOKEN": strings.Repeat("a", 40)}, nil, 2, "token too weak"},
		{"commit URL without {sha}", tok, []string{"--commit-url", "https://git.example.com/c/"}, 2, "no {sha} placeholder"},
		{"TLS cert without key", tok, []string{"--tls-cert", "cert.pem"}, 2, "--tls-cert and --tls-key go together"},
		{"slow status poll", tok, []string{"--status-poll", "2s"}, 2, "at most 500ms"},
		{"users file that is not bcrypt", nil, []string{"--users-file", badUsers}, 1, "not a bcrypt hash"},
		{"no database", map[string]string{"GRAPE_TOKEN": strongToken, "GRAPE_DATABASE_URL": ""}, nil, 2, "no database"},
		{"token without its user", map[string]string{"GRAPE_TOKEN": strongToken}, nil, 2, "set --token-user UUID"},
		{"token user that is no uuid", map[string]string{"GRAPE_TOKEN": strongToken, "GRAPE_TOKEN_USER": "alice"}, nil, 2, `--token-user "alice": not a user id`},
		{"users file without ids", nil, []string{"--users-file", noIDs}, 2, "users file: alice: no user id"},
		{"bad listen address", map[string]string{"GRAPE_USERS_FILE": users}, []string{"--listen", "256.0.0.1:1"}, 1, "listening on 256.0.0.1:1"},
		{"legacy owner mode says so", map[string]string{"GRAPE_USERS_FILE": noIDs}, []string{"--legacy-as-owner", "--listen", "256.0.0.1:1"}, 1, "LEGACY MODE (--legacy-as-owner)"},
	}
	for _, c := range cases {
		env := map[string]string{"GRAPE_DATABASE_URL": db}
		for k, v := range c.env {
			env[k] = v
		}
		var out, errb bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		code := run(ctx, append([]string{"serve"}, c.args...), &cmdIO{stdout: &out, stderr: &errb, stdin: strings.NewReader(""), getenv: func(k string) string { return env[k] }})
		cancel()
		require.Equal(t, c.code, code, "%s: %s", c.name, errb.String())
		require.Contains(t, errb.String(), c.want, c.name)
		require.NotContains(t, errb.String(), "secret-in-clear", c.name)
	}
}

// TestServe runs `grape serve` in-process: it listens on loopback, signs a
// token user in, serves a page, and stops cleanly on cancel even with a live
// terminal stream open.
func TestServe(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ok("cluster", "create", "eu-1")
	spec := writeFile(t, "intent.json", `{"region":"eu-central-1","modules":{"vpc":{}}}`)
	c.ok("config", "apply", "--cluster", "eu-1", "--name", "prod", "-f", spec)
	depID := c.ok("deploy", "--cluster", "eu-1", "--config", "prod")
	require.Regexp(t, `^[0-9a-f-]{36}$`, depID)

	// The portal acts as the token's user, who sees the clusters it is a
	// member of.
	c.ok("member", "add", "--cluster", "eu-1", "--user", strongTokenUser, "--role", "viewer")
	env := map[string]string{"GRAPE_DATABASE_URL": c.env["GRAPE_DATABASE_URL"], "GRAPE_TOKEN": strongToken, "GRAPE_TOKEN_USER": strongTokenUser, "GRAPE_LOG_FORMAT": "text"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--commit-url", "https://git.example.com/c/{sha}"},
			&cmdIO{stdout: io.Discard, stderr: stderr, stdin: strings.NewReader(""), getenv: func(k string) string { return env[k] }})
	}()
	addrRE := regexp.MustCompile(`grape serve: portal on (http://127\.0\.0\.1:\d+)`)
	var base string
	require.Eventually(t, func() bool {
		m := addrRE.FindStringSubmatch(stderr.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	}, 30*time.Second, 20*time.Millisecond, "no listening line: %s", stderr.String())

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := hc.Get(base + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = hc.Get(base + "/login")
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	require.NotNil(t, m)
	resp, err = hc.PostForm(base+"/login", url.Values{"token": {strongToken}, "csrf": {string(m[1])}})
	require.NoError(t, err)
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), `<a href="/clusters/eu-1">eu-1</a>`)
	require.Contains(t, string(page), depID)

	// An open live terminal must not hold up shutdown.
	req, err := http.NewRequest(http.MethodGet, base+"/deployments/"+depID+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	stream, err := (&http.Client{Jar: jar}).Do(req)
	require.NoError(t, err)
	defer stream.Body.Close()
	require.Equal(t, http.StatusOK, stream.StatusCode)
	first := make([]byte, 64)
	_, err = stream.Body.Read(first)
	require.NoError(t, err)

	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("grape serve did not stop: %s", stderr.String())
	}
}

// strongToken passes portal.CheckTokenStrength, as a real GRAPE_TOKEN must.
const strongToken = "9f1c2e7a4b8d3f60a5c7e9b1d2f4a6c8"

// strongTokenUser is the user id the token signs in as.
const strongTokenUser = "6a1f0c2e-5b3d-4e7f-8a9b-0c1d2e3f4a5b"
