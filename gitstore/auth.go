package gitstore

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"

	"github.com/grapehq/grape/redact"
)

// AuthOptions are the credentials for a remote workspace. They are passed to
// the transport and never written into the clone's configuration, a log line
// or an error.
type AuthOptions struct {
	// Token is an HTTPS access token, sent as the basic-auth password with
	// Username (default "x-access-token", which GitHub expects; GitLab takes
	// "oauth2" or any name, Bitbucket "x-token-auth").
	Token string
	// Username and Password are HTTPS basic-auth credentials. Username is
	// also the SSH user when the URL names none (default "git").
	Username string
	Password string
	// SSHKeyFile is a private key file (OpenSSH or PEM), optionally
	// encrypted with SSHKeyPassphrase.
	SSHKeyFile       string
	SSHKeyPassphrase string
	// SSHAgent authenticates with the keys of the agent at $SSH_AUTH_SOCK.
	SSHAgent bool
	// SSHKnownHostsFile verifies the server's host key; default
	// $SSH_KNOWN_HOSTS or ~/.ssh/known_hosts.
	SSHKnownHostsFile string
}

// Environment variables read by AuthFromEnv.
const (
	EnvToken            = "GRAPE_GIT_TOKEN"
	EnvUsername         = "GRAPE_GIT_USERNAME"
	EnvPassword         = "GRAPE_GIT_PASSWORD"
	EnvSSHKey           = "GRAPE_GIT_SSH_KEY"
	EnvSSHKeyPassphrase = "GRAPE_GIT_SSH_KEY_PASSPHRASE"
	EnvSSHAgent         = "GRAPE_GIT_SSH_AGENT"
	EnvSSHKnownHosts    = "GRAPE_GIT_SSH_KNOWN_HOSTS"
)

// AuthFromEnv reads workspace credentials from the environment, so they never
// appear on a command line: GRAPE_GIT_TOKEN, GRAPE_GIT_USERNAME,
// GRAPE_GIT_PASSWORD, GRAPE_GIT_SSH_KEY (a key file path),
// GRAPE_GIT_SSH_KEY_PASSPHRASE, GRAPE_GIT_SSH_AGENT (true/1) and
// GRAPE_GIT_SSH_KNOWN_HOSTS.
func AuthFromEnv() AuthOptions {
	agent, _ := strconv.ParseBool(os.Getenv(EnvSSHAgent))
	return AuthOptions{
		Token:             os.Getenv(EnvToken),
		Username:          os.Getenv(EnvUsername),
		Password:          os.Getenv(EnvPassword),
		SSHKeyFile:        os.Getenv(EnvSSHKey),
		SSHKeyPassphrase:  os.Getenv(EnvSSHKeyPassphrase),
		SSHAgent:          agent,
		SSHKnownHostsFile: os.Getenv(EnvSSHKnownHosts),
	}
}

func (a AuthOptions) isZero() bool { return a == AuthOptions{} }

// remoteURL is a remote as the store uses it: the URL handed to go-git has no
// credentials in it, and the one shown to people has none either.
type remoteURL struct {
	clean    string // no user info for http(s); what go-git and the clone's config see
	display  string // for errors and logs
	protocol string // http, https, ssh, git, file
	host     string // host:port, for SSH known_hosts lookups
	user     string // SSH user from the URL
	urlAuth  AuthOptions
}

// parseRemoteURL takes credentials out of an http(s) URL (they become the
// auth, unless explicit credentials are configured) and classifies the rest.
func parseRemoteURL(raw string) (remoteURL, error) {
	ep, err := transport.NewEndpoint(raw)
	if err != nil {
		return remoteURL{}, fmt.Errorf("parsing workspace URL %s: %w", DisplayURL(raw), err)
	}
	r := remoteURL{clean: raw, protocol: ep.Protocol, user: ep.User}
	port := ep.Port
	if port == 0 && ep.Protocol == "ssh" {
		port = 22
	}
	if port != 0 {
		r.host = net.JoinHostPort(strings.Trim(ep.Host, "[]"), strconv.Itoa(port))
	} else {
		r.host = ep.Host
	}
	switch ep.Protocol {
	case "http", "https":
		u, err := url.Parse(raw)
		if err != nil {
			return remoteURL{}, fmt.Errorf("parsing workspace URL %s: %w", DisplayURL(raw), err)
		}
		if u.User != nil {
			pw, hasPW := u.User.Password()
			if hasPW {
				r.urlAuth = AuthOptions{Username: u.User.Username(), Password: pw}
			} else {
				// https://<token>@host/...: the user part is the secret.
				r.urlAuth = AuthOptions{Token: u.User.Username()}
			}
			u.User = nil
			r.clean = u.String()
		}
		r.user = ""
	case "ssh", "git", "file":
	default:
		return remoteURL{}, fmt.Errorf("workspace URL %s: unsupported protocol %q (use https, ssh, git or file)", DisplayURL(raw), ep.Protocol)
	}
	r.display = DisplayURL(r.clean)
	return r, nil
}

// DisplayURL is a remote URL safe to show: any password is replaced by ***,
// and so is the user part of an http(s) URL, which is often a token.
func DisplayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		return redact.URL(raw)
	}
	if _, hasPW := u.User.Password(); hasPW {
		return redact.URL(raw)
	}
	if u.Scheme == "http" || u.Scheme == "https" {
		u.User = url.User("***")
		return strings.Replace(u.String(), "%2A%2A%2A@", "***@", 1)
	}
	return raw
}

// authMethod turns the options into what go-git's transport for the URL
// needs; nil means anonymous.
func (a AuthOptions) authMethod(r remoteURL) (transport.AuthMethod, error) {
	if a.isZero() {
		a = r.urlAuth
	}
	switch r.protocol {
	case "http", "https":
		if a.Token != "" && a.Password != "" {
			return nil, errors.New("both a token and a password are set for the workspace; set one")
		}
		if a.Token != "" {
			user := a.Username
			if user == "" {
				user = "x-access-token"
			}
			return &githttp.BasicAuth{Username: user, Password: a.Token}, nil
		}
		if a.Username != "" || a.Password != "" {
			return &githttp.BasicAuth{Username: a.Username, Password: a.Password}, nil
		}
		return nil, nil
	case "ssh":
		user := r.user
		if user == "" {
			user = a.Username
		}
		if user == "" {
			user = "git"
		}
		var helper *gitssh.HostKeyCallbackHelper
		var method transport.AuthMethod
		switch {
		case a.SSHKeyFile != "":
			pem, err := os.ReadFile(a.SSHKeyFile)
			if err != nil {
				return nil, fmt.Errorf("reading SSH key: %w", err)
			}
			keys, err := gitssh.NewPublicKeys(user, pem, a.SSHKeyPassphrase)
			if err != nil {
				return nil, fmt.Errorf("parsing SSH key %s: %w", a.SSHKeyFile, err)
			}
			helper, method = &keys.HostKeyCallbackHelper, keys
		case a.SSHAgent:
			agent, err := gitssh.NewSSHAgentAuth(user)
			if err != nil {
				return nil, fmt.Errorf("connecting to the SSH agent: %w", err)
			}
			helper, method = &agent.HostKeyCallbackHelper, agent
		default:
			// go-git falls back to the SSH agent on its own.
			return nil, nil
		}
		if a.SSHKnownHostsFile != "" {
			db, err := gitssh.NewKnownHostsDb(a.SSHKnownHostsFile)
			if err != nil {
				return nil, fmt.Errorf("reading SSH known hosts %s: %w", a.SSHKnownHostsFile, err)
			}
			helper.HostKeyCallback = db.HostKeyCallback()
			helper.HostKeyAlgorithms = db.HostKeyAlgorithms(r.host)
		}
		return method, nil
	default:
		return nil, nil
	}
}
