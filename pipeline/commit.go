package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/grapehq/grape/gitstore"
	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/stateguard"
	"github.com/grapehq/grape/store"
)

// intentFile is the normalised intent inside a rendering; the commit body
// lists what changed in it since the config's previous commit.
const intentFile = "intent.json"

// commit records the rendering in the audit repository. No commit, no
// terraform: a git failure ends the deployment before anything is applied.
func (d *Deployer) commit(ctx context.Context, r *reconciler.Run, cfg store.Config, rd rendering) (string, store.Outcome, bool) {
	dep := r.Deployment
	modules := rd.intent.EnabledModules()
	what := strings.Join(modules, ", ")
	if what == "" {
		what = "no modules"
	}
	version := cfg.Version
	if dep.ConfigVersion != nil {
		version = *dep.ConfigVersion
	}
	newIntent := rd.files[intentFile]
	trailers := []gitstore.Trailer{
		{Key: "Grape-Deployment", Value: dep.ID.String()},
		{Key: "Grape-Config", Value: fmt.Sprintf("%s@v%d", cfg.ID, version)},
		{Key: "Grape-Cluster", Value: cfg.ClusterID},
		{Key: "Grape-Action", Value: string(dep.Action)},
		{Key: "Grape-Templates", Value: rd.catalog.Version},
		{Key: "Grape-Engine", Value: d.Runner.Engine().String()},
	}
	if dep.MigrateState {
		// The audit trail says this commit moved the state, and where to.
		to, err := stateguard.LocationOf(newIntent, cfg.ClusterID, cfg.ID.String(), "", "")
		if err != nil {
			return "", failed(store.KindInternal, err.Error()), false
		}
		trailers = append(trailers, gitstore.Trailer{Key: "Grape-State-Migration", Value: "local state on agent " + r.AgentID() + " → " + to.String()})
	}
	policies, o := d.policyDigest(cfg)
	if o != nil {
		return "", *o, false
	}
	if policies != "" {
		// Which policies judged this rendering's plan, so the audit
		// repository alone tells what guarded a change.
		trailers = append(trailers, gitstore.Trailer{Key: gitstore.TrailerPolicies, Value: policies})
	}
	// The branch must still hold the last commit the cluster recorded: a
	// force-push must not disappear under a fresh commit.
	require, err := r.Store().HistoryAnchor(ctx, cfg.ClusterID)
	if err != nil {
		return "", failed(store.KindInternal, err.Error()), false
	}
	res, err := d.Git.Commit(ctx, gitstore.Change{
		Require:    require,
		ClusterID:  cfg.ClusterID,
		ConfigName: auditDir(cfg),
		Files:      rd.files,
		Subject:    fmt.Sprintf("%s %s (cluster %s): %s", dep.Action, cfg.Name, cfg.ClusterID, what),
		Body: func(previous map[string][]byte) string {
			return commitBody(previous[intentFile], newIntent, rd.catalog)
		},
		Trailers: trailers,
	})
	if err != nil {
		if o, full := diskFull(r, err, "committing the rendering"); full {
			return "", o, false
		}
		var conflict *gitstore.ConflictError
		if errors.As(err, &conflict) {
			return "", failed(store.KindGit, conflict.Error()), false
		}
		var rewritten *gitstore.HistoryError
		if errors.As(err, &rewritten) {
			return "", failed(store.KindGit, rewritten.Error()), false
		}
		return "", failed(store.KindGit, fmt.Sprintf("committing the rendering failed: %v", err)), false
	}
	note := ""
	if res.Empty {
		note = " (rendering unchanged: empty commit)"
	}
	if res.Pushed {
		note += " and pushed"
	}
	r.Logs.Agentf("committed %s%s", res.SHA, note)
	return res.SHA, store.Outcome{}, true
}

// commitBody lists the intent's changes since the previous commit of the
// config, so a reviewer reads the why before the diff.
func commitBody(previous, current []byte, cat *render.Catalog) string {
	var b strings.Builder
	if previous == nil {
		b.WriteString("First rendering of this config.\n")
	} else if changes := render.DiffIntent(previous, current); len(changes) == 0 {
		b.WriteString("Intent unchanged since the previous commit of this config.\n")
	} else {
		b.WriteString("Intent changes since the previous commit of this config:\n")
		for _, c := range changes {
			b.WriteString("  " + c + "\n")
		}
	}
	fmt.Fprintf(&b, "\nRendered with template set %s (%s).", cat.Version, shortDigest(cat.Digest))
	return b.String()
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
