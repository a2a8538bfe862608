package portal

import (
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/grapehq/grape/store"
)

// Who the portal's queries run as (docs/portal.md, "Who the portal acts
// as"): every page and action runs in one transaction as its signed-in user
// (store.AsUser: role authenticated, the user's claims in
// request.jwt.claims), so the database's policies and triggers — roles per
// cluster, four eyes — are the portal's only rules. Options.ActAsOwner is
// the legacy mode where every sign-in acts as the database owner.

type storeKeyType struct{}

// store is the request's store: the signed-in user's transaction. A query
// outside one is a bug that would act with the owner's rights, so it
// panics (net/http answers 500) rather than run.
func (s *Server) store(ctx context.Context) *store.Store {
	if st, ok := ctx.Value(storeKeyType{}).(*store.Store); ok {
		return st
	}
	if s.opts.ActAsOwner {
		return s.st
	}
	panic("portal: a query outside the signed-in user's transaction")
}

// as runs f in the request user's transaction: the page's own when there
// is one, else a new one (each read of a live stream is its own, so an
// open terminal holds no transaction between reads).
func (s *Server) as(ctx context.Context, f func(ctx context.Context) error) error {
	if _, ok := ctx.Value(storeKeyType{}).(*store.Store); ok || s.opts.ActAsOwner {
		return f(ctx)
	}
	sess := sessionFrom(ctx)
	if sess == nil || sess.UID == "" {
		return errors.New("portal: no signed-in user to act as")
	}
	return s.st.AsUser(ctx, sess.claims(), func(ctx context.Context, st *store.Store) error {
		return f(context.WithValue(ctx, storeKeyType{}, st))
	})
}

// claims are what the database reads of the signed-in user, in Supabase's
// shape: sub is auth.uid(); email is what requested_by, approved_by and the
// audit trail show (a users-file name, "token", or the Supabase email);
// app_metadata.org_id is the organisation (migration 0003).
func (sess *session) claims() map[string]any {
	c := map[string]any{"sub": sess.UID, "role": "authenticated", "aud": "authenticated", "email": sess.User}
	if sess.Org != "" {
		c["app_metadata"] = map[string]any{"org_id": sess.Org}
	}
	return c
}

// role is the user's role on a cluster as the database says it (""
// for none): pages show only the buttons it allows. The database refuses
// the rest anyway; this only spares people a 403.
func (s *Server) role(ctx context.Context, clusterID string) (store.Role, error) {
	return s.store(ctx).MyRole(ctx, clusterID)
}

// bufferedResponse holds a page until its transaction commits: a page must
// not say "done" for a change that then rolls back.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

func (b *bufferedResponse) sendTo(w http.ResponseWriter) {
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	for k, v := range b.header {
		h[k] = v
	}
	w.WriteHeader(max(b.status, http.StatusOK))
	_, _ = w.Write(b.body.Bytes())
}

// handle adapts a page or action: it runs in the user's transaction, its
// response is sent once that commits, and an error it returns becomes a
// status page (fail). A handler that has begun its response returns nil.
func (s *Server) handle(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		buf := &bufferedResponse{header: w.Header().Clone()}
		err := s.as(r.Context(), func(ctx context.Context) error {
			return h(buf, r.WithContext(ctx))
		})
		// A handler that caught a refused statement and answered with a
		// form (the config editor) leaves an aborted transaction: its
		// answer stands, and nothing was written.
		if err != nil && !errors.Is(err, pgx.ErrTxCommitRollback) {
			s.fail(w, r, err)
			return
		}
		buf.sendTo(w)
	}
}

// stream adapts a handler that writes as it reads (the live terminal, the
// log download): no page transaction; it reads through s.as.
func (s *Server) stream(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	}
}
