package gitstore

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

func TestDisplayURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://alice:hunter2@git.example.com/org/ws.git", "https://alice:***@git.example.com/org/ws.git"},
		{"https://ghp_abcdef123456@github.com/org/ws.git", "https://***@github.com/org/ws.git"},
		{"https://github.com/org/ws.git", "https://github.com/org/ws.git"},
		{"ssh://git@github.com/org/ws.git", "ssh://git@github.com/org/ws.git"},
		{"git@github.com:org/ws.git", "git@github.com:org/ws.git"},
		{"git://127.0.0.1:9418/ws.git", "git://127.0.0.1:9418/ws.git"},
		{"/srv/git/ws.git", "/srv/git/ws.git"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, DisplayURL(tt.in), tt.in)
	}
}

func TestParseRemoteURLTakesCredentialsOut(t *testing.T) {
	t.Parallel()
	r, err := parseRemoteURL("https://alice:hunter2@git.example.com/org/ws.git")
	require.NoError(t, err)
	assert.Equal(t, "https://git.example.com/org/ws.git", r.clean)
	assert.Equal(t, AuthOptions{Username: "alice", Password: "hunter2"}, r.urlAuth)

	r, err = parseRemoteURL("https://ghp_token@github.com/org/ws.git")
	require.NoError(t, err)
	assert.Equal(t, "https://github.com/org/ws.git", r.clean)
	assert.Equal(t, AuthOptions{Token: "ghp_token"}, r.urlAuth)

	r, err = parseRemoteURL("git@github.com:org/ws.git")
	require.NoError(t, err)
	assert.Equal(t, "ssh", r.protocol)
	assert.Equal(t, "git", r.user)
	assert.Equal(t, "github.com:22", r.host)

	_, err = parseRemoteURL("ftp://alice:hunter2@example.com/ws.git")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestAuthMethod(t *testing.T) {
	t.Parallel()
	keyFile := writeSSHKey(t)
	https, err := parseRemoteURL("https://git.example.com/ws.git")
	require.NoError(t, err)
	sshURL, err := parseRemoteURL("ssh://deploy@git.example.com:2222/ws.git")
	require.NoError(t, err)
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(knownHosts, nil, 0o644))

	tests := []struct {
		name    string
		auth    AuthOptions
		url     remoteURL
		want    any
		wantErr string
	}{
		{"anonymous https", AuthOptions{}, https, nil, ""},
		{"token gets GitHub's user name", AuthOptions{Token: "t0k"}, https,
			&githttp.BasicAuth{Username: "x-access-token", Password: "t0k"}, ""},
		{"token with a user name", AuthOptions{Token: "t0k", Username: "oauth2"}, https,
			&githttp.BasicAuth{Username: "oauth2", Password: "t0k"}, ""},
		{"basic", AuthOptions{Username: "u", Password: "p"}, https, &githttp.BasicAuth{Username: "u", Password: "p"}, ""},
		{"token and password", AuthOptions{Token: "t", Password: "p"}, https, nil, "both a token and a password"},
		{"missing key file", AuthOptions{SSHKeyFile: "/nonexistent/key"}, sshURL, nil, "reading SSH key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.auth.authMethod(tt.url)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			if tt.want == nil {
				assert.Nil(t, got)
				return
			}
			assert.Equal(t, tt.want, got)
		})
	}

	got, err := AuthOptions{SSHKeyFile: keyFile, SSHKnownHostsFile: knownHosts}.authMethod(sshURL)
	require.NoError(t, err)
	keys, ok := got.(*gitssh.PublicKeys)
	require.True(t, ok, "%T", got)
	assert.Equal(t, "deploy", keys.User, "the URL's user wins")
	assert.NotNil(t, keys.HostKeyCallback, "known_hosts file is used")
	assert.NotContains(t, keys.String(), "PRIVATE")
}

func writeSSHKey(t testing.TB) string {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "id_ed25519")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(block), 0o600))
	return p
}

func TestAuthFromEnv(t *testing.T) {
	t.Setenv(EnvToken, "tok")
	t.Setenv(EnvUsername, "user")
	t.Setenv(EnvPassword, "")
	t.Setenv(EnvSSHKey, "/keys/id")
	t.Setenv(EnvSSHKeyPassphrase, "pp")
	t.Setenv(EnvSSHAgent, "true")
	t.Setenv(EnvSSHKnownHosts, "/keys/known_hosts")
	assert.Equal(t, AuthOptions{Token: "tok", Username: "user", SSHKeyFile: "/keys/id", SSHKeyPassphrase: "pp",
		SSHAgent: true, SSHKnownHostsFile: "/keys/known_hosts"}, AuthFromEnv())
}

func TestTransient(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	unavailable := &githttp.Err{Response: &http.Response{StatusCode: http.StatusServiceUnavailable}}
	forbidden := &githttp.Err{Response: &http.Response{StatusCode: http.StatusBadRequest}}
	tests := []struct {
		err  error
		want bool
	}{
		{refused, true},
		{fmt.Errorf("listing refs: %w", refused), true},
		{plumbing.NewUnexpectedError(refused), true},
		{syscall.ECONNRESET, true},
		{context.DeadlineExceeded, true},
		{plumbing.NewUnexpectedError(unavailable), true},
		{plumbing.NewUnexpectedError(forbidden), false},
		{context.Canceled, false},
		{transport.ErrAuthenticationRequired, false},
		{fmt.Errorf("%w: bad token", transport.ErrAuthorizationFailed), false},
		{transport.ErrRepositoryNotFound, false},
		{errors.New("unpack error: index-pack failed"), false},
		{&net.DNSError{Err: "no such host", Name: "git.example.invalid", IsNotFound: true}, false},
		{&net.DNSError{Err: "server misbehaving", Name: "git.example.com", IsTemporary: true}, true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, transient(tt.err), "%v", tt.err)
	}
}

func TestMessageLayout(t *testing.T) {
	t.Parallel()
	msg, err := message("  apply prod  ", "\n\nbody line\r\nsecond\n\n\n", []Trailer{{"Grape-Action", " apply "}})
	require.NoError(t, err)
	assert.Equal(t, "apply prod\n\nbody line\nsecond\n\nGrape-Action: apply\n", msg)
	msg, err = message("apply prod", "", nil)
	require.NoError(t, err)
	assert.Equal(t, "apply prod\n", msg)
	_, err = message("ok", "", []Trailer{{"Grape-Action", ""}})
	require.Error(t, err)
	require.Error(t, Signature{Name: "a<b", Email: "x@y"}.validate())
	assert.Error(t, Signature{Name: "a", Email: ""}.validate())
}
