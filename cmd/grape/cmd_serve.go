package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/grapehq/grape/portal"
	"github.com/grapehq/grape/store"
)

func init() {
	register(&command{
		name:    "serve",
		summary: "run the web portal: clusters, configs, deployments with a live terminal, drift (docs/portal.md)",
		long: `Serves the control plane in a browser from the same database the agents use.
It listens on loopback unless --listen says otherwise, and every page needs a
sign-in: a static token (--token), users from a bcrypt file (--users-file), or a
Supabase Auth access token (--supabase-jwt-secret, --supabase-jwks-url), also
accepted as Authorization: Bearer on every route. Each request runs as its
signed-in user (role authenticated with the user's claims), so roles per
cluster (grape member) and four eyes decide what a user sees and may do; the
token and the users file name user ids (--token-user, user:uuid:hash lines).
Pass secrets as environment
variables (GRAPE_TOKEN, GRAPE_SUPABASE_JWT_SECRET, GRAPE_SESSION_SECRET), not on
the command line, where other users of the host can read them.`,
		flags: func(fs *flag.FlagSet) runFunc {
			var (
				db, listen, commitURL                string
				token, usersFile, jwtSecret, allow   string
				jwksURL, jwksFile, issuer, audience  string
				sessionSecret, tlsCert, tlsKey       string
				secureCookies, asOwner               bool
				tokenUser                            string
				sessionTTL, agentOffline, statusPoll time.Duration
				tmpl                                 templateFlags
				logs                                 logFlags
			)
			dbFlag(fs, &db)
			fs.StringVar(&listen, "listen", "127.0.0.1:8080", "address to listen on; loopback by default, so the portal is not reachable from other hosts unless asked")
			fs.StringVar(&commitURL, "commit-url", "", "link template for commit SHAs on your git server, e.g. https://git.example.com/infra/commit/{sha}")
			fs.StringVar(&token, "token", "", "a shared sign-in token (prefer the GRAPE_TOKEN variable)")
			fs.StringVar(&tokenUser, "token-user", "", "the user id (a uuid) the token signs in as; its roles are its memberships (grape member add --user UUID)")
			fs.StringVar(&usersFile, "users-file", "", "file of user:uuid:bcrypt-hash lines (the uuid is the user's id for grape member add; the hash from htpasswd -nbB USER PASSWORD) for user-name sign-in")
			fs.BoolVar(&asOwner, "legacy-as-owner", false, "legacy: every sign-in acts with the database URL's own rights (sees and may do everything; cluster roles do not apply in the portal)")
			fs.StringVar(&jwtSecret, "supabase-jwt-secret", "", "the Supabase project's JWT secret: lets Supabase Auth users sign in with their access token (HS256)")
			fs.StringVar(&jwksURL, "supabase-jwks-url", "", "the Supabase project's signing keys (https://<ref>.supabase.co/auth/v1/.well-known/jwks.json): verifies ES256/RS256 access tokens; cached, read again for an unknown key id")
			fs.StringVar(&jwksFile, "supabase-jwks-file", "", "the signing keys as a JWKS file, for hosts that cannot reach Supabase")
			fs.StringVar(&issuer, "supabase-issuer", "", "refuse Supabase tokens whose iss is not this (https://<ref>.supabase.co/auth/v1)")
			fs.StringVar(&audience, "supabase-audience", "authenticated", "the aud Supabase access tokens must carry")
			fs.StringVar(&allow, "supabase-allow", "", "comma-separated emails and @domains allowed to sign in with Supabase (default: every signed-in user of the project)")
			fs.StringVar(&sessionSecret, "session-secret", "", "key that signs session cookies; set it to keep sessions across restarts and replicas (default: random per start)")
			fs.DurationVar(&sessionTTL, "session-ttl", 12*time.Hour, "how long a sign-in lasts")
			fs.BoolVar(&secureCookies, "secure-cookies", false, "mark cookies Secure on plain HTTP too (TLS terminated by a proxy in front)")
			fs.StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM, with --tls-key)")
			fs.StringVar(&tlsKey, "tls-key", "", "private key of --tls-cert (PEM)")
			fs.DurationVar(&agentOffline, "agent-offline-after", 30*time.Second, "show an agent offline when its last heartbeat is older than this")
			fs.DurationVar(&statusPoll, "status-poll", 500*time.Millisecond, "how often an open live terminal re-reads its deployment's status")
			tmpl.register(fs)
			logs.register(fs)
			return func(ctx context.Context, cio *cmdIO, args []string) error {
				if len(args) > 0 {
					return usagef("serve takes no arguments")
				}
				log, err := logs.logger(cio.stderr)
				if err != nil {
					return err
				}
				if jwksURL != "" && jwksFile != "" {
					return usagef("--supabase-jwks-url and --supabase-jwks-file: give one")
				}
				if jwksURL != "" && !strings.HasPrefix(jwksURL, "https://") && !strings.HasPrefix(jwksURL, "http://127.0.0.1") && !strings.HasPrefix(jwksURL, "http://localhost") {
					return usagef("--supabase-jwks-url %q: must be https (keys fetched in clear could be swapped)", jwksURL)
				}
				auth := portal.Auth{Token: token, SupabaseJWTSecret: []byte(jwtSecret), SupabaseJWKSURL: jwksURL,
					SupabaseJWKSFile: jwksFile, SupabaseIssuer: issuer, SupabaseAudience: audience}
				if tokenUser != "" {
					if auth.TokenUser, err = uuid.Parse(tokenUser); err != nil {
						return usagef("--token-user %q: not a user id (a uuid, e.g. from uuidgen)", tokenUser)
					}
				}
				if usersFile != "" {
					if auth.Users, err = portal.LoadUsersFile(usersFile); err != nil {
						return err
					}
				}
				supabase := jwtSecret != "" || jwksURL != "" || jwksFile != ""
				if token == "" && usersFile == "" && !supabase {
					return usagef("no sign-in method: set GRAPE_TOKEN (or --token), --users-file, --supabase-jwt-secret or --supabase-jwks-url")
				}
				if token != "" {
					if err := portal.CheckTokenStrength(token); err != nil {
						return usagef("%v", err)
					}
				}
				for _, a := range strings.Split(allow, ",") {
					if a = strings.TrimSpace(a); a != "" {
						auth.SupabaseAllow = append(auth.SupabaseAllow, a)
					}
				}
				if supabase && len(auth.SupabaseAllow) == 0 {
					log.Warn("every signed-in user of the Supabase project may use the portal; limit it with --supabase-allow if sign-ups are open")
				}
				if (tlsCert == "") != (tlsKey == "") {
					return usagef("--tls-cert and --tls-key go together")
				}
				if statusPoll > 500*time.Millisecond {
					return usagef("--status-poll %s: at most 500ms, or finished runs show as running for too long", statusPoll)
				}
				catalog, err := tmpl.catalog(ctx, "")
				if err != nil {
					return err
				}
				return withStore(ctx, db, func(st *store.Store) error {
					if asOwner {
						log.Warn("LEGACY MODE (--legacy-as-owner): every portal sign-in acts with the database URL's own rights; cluster roles and memberships do not limit what portal users see or do")
					} else if err := st.CheckAsUser(ctx); err != nil {
						return fmt.Errorf("the portal acts as each signed-in user: %w (or run with --legacy-as-owner)", err)
					}
					srv, err := portal.New(portal.Options{
						Store: st, ConnString: db, Catalog: catalog, Auth: auth, CommitURL: commitURL, ActAsOwner: asOwner,
						SecureCookies: secureCookies, SessionSecret: []byte(sessionSecret), SessionTTL: sessionTTL,
						AgentOfflineAfter: agentOffline, StatusPoll: statusPoll, Logger: log,
					})
					if err != nil {
						return usagef("%v", err)
					}
					if sessionSecret == "" {
						log.Info("no --session-secret: sessions end when the portal restarts")
					}
					ln, err := net.Listen("tcp", listen)
					if err != nil {
						return fmt.Errorf("listening on %s: %w", listen, err)
					}
					if !isLoopback(ln.Addr()) && tlsCert == "" && !secureCookies {
						log.Warn("serving a non-loopback address over plain HTTP: sign-ins and session cookies cross the network in clear; use --tls-cert/--tls-key, or a TLS proxy and --secure-cookies")
					}
					return servePortal(ctx, cio, log, srv, ln, tlsCert, tlsKey)
				})
			}
		},
	})
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// servePortal runs the HTTP server and the portal's LISTEN fan-out until ctx
// ends, then shuts down: request contexts derive from ctx, so open live
// terminals end at once and Shutdown does not wait for them.
func servePortal(ctx context.Context, cio *cmdIO, log *slog.Logger, srv *portal.Server, ln net.Listener, cert, key string) error {
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); _ = srv.Run(runCtx) }()
	served := make(chan error, 1)
	scheme := "http"
	if cert != "" {
		scheme = "https"
	}
	go func() {
		if cert != "" {
			served <- hs.ServeTLS(ln, cert, key)
		} else {
			served <- hs.Serve(ln)
		}
	}()
	log.Info("portal listening", "url", scheme+"://"+ln.Addr().String())
	fmt.Fprintf(cio.stderr, "grape serve: portal on %s://%s\n", scheme, ln.Addr())

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if serr := hs.Shutdown(shutdownCtx); serr != nil && err == nil {
		err = fmt.Errorf("shutting down the portal: %w", serr)
	}
	stopRun()
	<-hubDone
	if err != nil {
		return fmt.Errorf("serving the portal: %w", err)
	}
	return nil
}
