package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grapehq/grape/reconciler"
	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/store"
)

// rendering is what the render step hands to the commit step.
type rendering struct {
	intent  *render.Intent
	catalog *render.Catalog
	files   map[string][]byte
}

// render validates the intent against the templates and renders the root
// module. A bad intent fails the deployment before anything is written.
func (d *Deployer) render(ctx context.Context, r *reconciler.Run, cfg store.Config, spec json.RawMessage) (rendering, store.Outcome, bool) {
	cat, err := d.Templates(ctx)
	if err != nil {
		return rendering{}, failed(store.KindBadConfig, fmt.Sprintf("loading templates: %v", err)), false
	}
	in, err := cat.Validate(spec)
	if err != nil {
		return rendering{}, badIntent(r, err), false
	}
	tree, err := cat.Render(in, render.Meta{ClusterID: cfg.ClusterID, ConfigID: cfg.ID.String(), ConfigName: cfg.Name})
	if err != nil {
		return rendering{}, badIntent(r, err), false
	}
	r.Logs.Agentf("rendered %d files with templates %s: modules %v", len(tree.Files), cat.Version, in.EnabledModules())
	return rendering{intent: in, catalog: cat, files: tree.Files}, store.Outcome{}, true
}

// badIntent logs every validation error and fails with the first one.
func badIntent(r *reconciler.Run, err error) store.Outcome {
	var ve *render.ValidationError
	if errors.As(err, &ve) && len(ve.Errors) > 0 {
		for _, fe := range ve.Errors {
			r.Logs.Agentf("invalid intent: %s", fe.String())
		}
		msg := "invalid intent: " + ve.Errors[0].String()
		if n := len(ve.Errors) - 1; n > 0 {
			msg += fmt.Sprintf(" (and %d more in the log)", n)
		}
		return failed(store.KindBadConfig, msg)
	}
	r.Logs.Agentf("invalid intent: %v", err)
	return failed(store.KindBadConfig, "invalid intent: "+err.Error())
}
