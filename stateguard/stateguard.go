// Package stateguard holds the agent's decisions that keep a config's
// infrastructure from being created twice, orphaned or rolled back by
// accident (docs/operations.md, "Where state lives"). Each is a pure
// function of what the control plane, the audit repository and the plan
// know; the deployment pipeline calls them and fails the deployment with
// the refusal's kind and message, before anything is applied.
package stateguard

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/grapehq/grape/render"
	"github.com/grapehq/grape/store"
)

// Refusal is why a deployment must stop: its error kind and the sentence a
// person reads, naming what was found and the way out.
type Refusal struct {
	Kind store.ErrorKind
	Msg  string
}

func (r *Refusal) Error() string { return r.Msg }

// Location is where a run's terraform state lives.
type Location struct {
	Backend string // "local" or "s3"
	// Path is the local state file (local backend).
	Path string
	// Agent holds a local state.
	Agent string
	// Bucket, Key and Region locate an S3 state.
	Bucket, Key, Region string
}

func (l Location) String() string {
	if l.Backend == "local" {
		s := "local state " + l.Path
		if l.Agent != "" {
			s += " on agent " + l.Agent
		}
		return s
	}
	s := fmt.Sprintf("%s backend s3://%s/%s", l.Backend, l.Bucket, l.Key)
	if l.Region != "" {
		s += " (region " + l.Region + ")"
	}
	return s
}

// LocationOf reads where the committed intent (intent.json of a rendering)
// keeps the state of config configID; localPath and agent are the agent's
// state file for a local backend.
func LocationOf(intent []byte, clusterID, configID, localPath, agent string) (Location, error) {
	var in struct {
		Region  string              `json:"region"`
		Backend *render.BackendSpec `json:"backend"`
	}
	if len(intent) > 0 {
		if err := json.Unmarshal(intent, &in); err != nil {
			return Location{}, fmt.Errorf("reading the committed intent's backend: %w", err)
		}
	}
	if in.Backend == nil || in.Backend.Type == "" || in.Backend.Type == "local" {
		return Location{Backend: "local", Path: localPath, Agent: agent}, nil
	}
	l := Location{Backend: in.Backend.Type, Bucket: in.Backend.Bucket, Key: in.Backend.Key, Region: in.Backend.Region}
	if l.Key == "" {
		l.Key = render.DefaultStateKey(render.Meta{ClusterID: clusterID, ConfigID: configID})
	}
	if l.Region == "" {
		l.Region = in.Region
	}
	return l, nil
}

// EmptyState is what the empty-state guard looks at after plan.
type EmptyState struct {
	Config     store.Config
	Deployment store.Deployment
	Applied    store.Applied
	// PriorResources is how many managed resources the plan's prior state held.
	PriorResources int
	Where          Location
}

// CheckEmptyState refuses a run whose plan started from an empty state
// although Grape applied the config and has not destroyed it: planning from
// there would create everything again (apply), forget it (destroy), or call
// an orphaned stack "drifted" (drift check). A deployment queued with
// accept_empty_state goes on; note then says so for the log.
func CheckEmptyState(in EmptyState) (refusal *Refusal, note string) {
	if !in.Applied.Applied || in.PriorResources > 0 {
		return nil, ""
	}
	dep, cfg := in.Deployment, in.Config
	what := "it"
	if last := in.Applied.Last; last != nil {
		when := ""
		if last.FinishedAt != nil {
			when = " on " + last.FinishedAt.UTC().Format(time.RFC3339)
		}
		what = fmt.Sprintf("deployment %s (v%d)%s", last.ID, in.Applied.Version, when)
		if last.StateResources != nil {
			what += fmt.Sprintf(", leaving %d resources,", *last.StateResources)
		}
	}
	if dep.AcceptEmptyState && dep.Action != store.ActionDrift {
		return nil, fmt.Sprintf("the state at %s is empty although Grape applied %s; going on because %s accepted an empty state for this deployment", in.Where, what, orSomeone(dep.RequestedBy))
	}
	verb := map[store.Action]string{store.ActionApply: "create the whole stack again", store.ActionDestroy: "destroy nothing and mark it destroyed",
		store.ActionPlan: "show the whole stack as new", store.ActionDrift: "report every resource as missing"}[dep.Action]
	var b strings.Builder
	fmt.Fprintf(&b, "state missing: Grape applied config %s with %s and has not destroyed it, but the plan found an empty state at %s; planning from there would %s. Nothing was applied. ", cfg.Name, what, in.Where, verb)
	if in.Where.Backend == "local" {
		fmt.Fprintf(&b, "If the state is elsewhere, put it back: `grape state list|restore --cluster %s --config %s` on the agent that holds it, or copy it to %s; ", cfg.ClusterID, cfg.Name, in.Where.Path)
	} else {
		fmt.Fprintf(&b, "If the state is elsewhere, copy it to s3://%s/%s; ", in.Where.Bucket, in.Where.Key)
	}
	if dep.Action == store.ActionDrift {
		b.WriteString("if the stack was destroyed outside Grape, re-create it with `grape deploy --accept-empty-state`.")
	} else {
		fmt.Fprintf(&b, "if the stack was destroyed outside Grape, re-create it once with `grape deploy --cluster %s --config %s --accept-empty-state` (recorded with who asked).", cfg.ClusterID, cfg.Name)
	}
	return &Refusal{Kind: store.KindStateMissing, Msg: b.String()}, ""
}

// AuditTrail is what the control-plane-behind guard compares before render.
type AuditTrail struct {
	Config     store.Config
	Deployment store.Deployment
	// Version is the config version the deployment renders.
	Version int
	// Found, LatestVersion, LatestSHA and LatestAt describe the newest
	// commit of the config in the audit repository.
	Found         bool
	LatestVersion int
	LatestSHA     string
	LatestAt      time.Time
	// Path is the config's directory in the audit repository.
	Path string
}

// CheckAuditTrail refuses to render a config version older than the one the
// audit repository's newest commit of the config rendered: the database is
// behind its own audit trail (restored from a snapshot, rolled back), and
// deploying would roll the infrastructure back without anyone asking. A
// deployment queued with accept_rollback goes on; note then says so.
func CheckAuditTrail(in AuditTrail) (refusal *Refusal, note string) {
	if !in.Found || in.Version >= in.LatestVersion {
		return nil, ""
	}
	cfg, dep := in.Config, in.Deployment
	if dep.AcceptRollback {
		return nil, fmt.Sprintf("deploying v%d of %s although the audit repository's newest commit %s rendered v%d; going on because %s accepted the rollback for this deployment",
			in.Version, cfg.Name, short(in.LatestSHA), in.LatestVersion, orSomeone(dep.RequestedBy))
	}
	return &Refusal{Kind: store.KindControlPlaneBehind, Msg: fmt.Sprintf(
		"control plane behind its audit trail: this deployment would deploy v%d of config %s, but the audit repository's newest commit of it, %s (%s), deployed v%d — the database is older than git (restored from a snapshot?). Nothing was planned. "+
			"To bring the database forward, store that intent again: `git show %s:%s/intent.json > intent.json && grape config apply --cluster %s --name %s -f intent.json`; "+
			"if going back to v%d is intended, `grape deploy --cluster %s --config %s --accept-rollback` (recorded with who asked).",
		in.Version, cfg.Name, short(in.LatestSHA), in.LatestAt.UTC().Format(time.RFC3339), in.LatestVersion,
		in.LatestSHA, in.Path, cfg.ClusterID, cfg.Name, in.Version, cfg.ClusterID, cfg.Name)}, ""
}

// IdentityChange says how spec moves the stack that appliedSpec describes
// ("region eu-central-1 → eu-west-1", "backend local → s3"), or "". Region
// and backend are compared as the database's guard compares them (an
// absent region is render.DefaultRegion, an absent backend local).
func IdentityChange(appliedSpec, spec json.RawMessage) string {
	a, b := identityOf(appliedSpec), identityOf(spec)
	switch {
	case a.region != b.region:
		return fmt.Sprintf("region %s → %s", a.region, b.region)
	case a.backend != b.backend:
		return fmt.Sprintf("backend %s → %s", a.backendName, b.backendName)
	}
	return ""
}

type identity struct {
	region, backend, backendName string
}

func identityOf(spec json.RawMessage) identity {
	var in struct {
		Region  string          `json:"region"`
		Backend json.RawMessage `json:"backend"`
	}
	_ = json.Unmarshal(spec, &in)
	id := identity{region: in.Region, backend: `{"type":"local"}`, backendName: "local"}
	if id.region == "" {
		id.region = render.DefaultRegion
	}
	var be map[string]any
	if len(in.Backend) > 0 && json.Unmarshal(in.Backend, &be) == nil && be != nil && be["type"] != "local" {
		canon, _ := json.Marshal(be) // map keys sorted: a canonical form
		id.backend = string(canon)
		id.backendName = fmt.Sprint(be["type"])
		if bucket, ok := be["bucket"].(string); ok {
			id.backendName += " bucket " + bucket
		}
	}
	return id
}

// CheckIdentity refuses to deploy a version that moves the stack Grape
// applied (another region or backend) while that stack still exists: the
// database refuses such writes, but a destroy that failed after
// `--replace-stack`, or a row restored from elsewhere, can still bring one.
func CheckIdentity(cfg store.Config, a store.Applied, appliedSpec, spec json.RawMessage, version int) *Refusal {
	if !a.Applied || a.Version == version || appliedSpec == nil {
		return nil
	}
	change := IdentityChange(appliedSpec, spec)
	if change == "" {
		return nil
	}
	msg := fmt.Sprintf(
		"invalid intent: v%d of config %s changes its %s, but the stack v%d applied still exists there; applying would create it again and orphan the old one. Nothing was rendered. "+
			"Destroy it first (`grape deploy --cluster %s --config %s --action destroy` of the applied version) or use `grape config apply --replace-stack`",
		version, cfg.Name, change, a.Version, cfg.ClusterID, cfg.Name)
	if identityOf(appliedSpec).region == identityOf(spec).region {
		msg += "; or keep the stack and move its state to the new backend:" +
			BackendMove{ClusterID: cfg.ClusterID, ConfigID: cfg.ID.String(), Name: cfg.Name, From: appliedSpec, To: spec}.Text()
	}
	return &Refusal{Kind: store.KindBadConfig, Msg: msg}
}

func orSomeone(who string) string {
	if who == "" {
		return "someone (no name recorded)"
	}
	return who
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// StackInputChanges lists the template inputs marked as part of the stack's
// identity (render.Variable.StackIdentity) whose effective value differs
// between the applied intent and spec, e.g. `modules.vpc.cidr "10.0.0.0/16"
// → "10.1.0.0/16" (a new CIDR replaces the VPC and everything in it)`. The
// effective value is the intent's, else the variable's default. Only modules
// on in both versions count: turning a module on or off is an ordinary
// create or destroy the plan shows.
func StackInputChanges(cat *render.Catalog, appliedSpec, spec json.RawMessage) []string {
	if cat == nil {
		return nil
	}
	was, now := modulesOf(appliedSpec), modulesOf(spec)
	var out []string
	for _, m := range cat.Modules() {
		a, inA := was[m.Name]
		b, inB := now[m.Name]
		if !inA || !inB {
			continue
		}
		for _, v := range m.Variables {
			if !v.StackIdentity {
				continue
			}
			from, to := effective(a, &v), effective(b, &v)
			if from != to {
				out = append(out, fmt.Sprintf("modules.%s.%s %s → %s (%s)", m.Name, v.Name, from, to, v.StackIdentityWhy))
			}
		}
	}
	return out
}

// modulesOf reads the modules an intent turns on, with their inputs. An
// intent that does not parse has none: validation reports it elsewhere.
func modulesOf(spec json.RawMessage) map[string]map[string]json.RawMessage {
	var in struct {
		Modules map[string]map[string]json.RawMessage `json:"modules"`
	}
	_ = json.Unmarshal(spec, &in)
	on := map[string]map[string]json.RawMessage{}
	for name, inputs := range in.Modules {
		if e, ok := inputs["enabled"]; ok && strings.TrimSpace(string(e)) == "false" {
			continue
		}
		on[name] = inputs
	}
	return on
}

// effective is an input's value as compact JSON: the intent's, else the
// default ("null" when neither is there).
func effective(inputs map[string]json.RawMessage, v *render.Variable) string {
	if raw, ok := inputs[v.Name]; ok {
		return canonicalJSON(raw)
	}
	if v.Default == nil || v.Default.IsNull() {
		return "null"
	}
	b, err := ctyjson.Marshal(*v.Default, v.Default.Type())
	if err != nil {
		return "null"
	}
	return canonicalJSON(b)
}

// canonicalJSON re-encodes JSON so equal values compare equal (key order,
// spacing, 2 vs 2.0).
func canonicalJSON(raw []byte) string {
	var x any
	if json.Unmarshal(raw, &x) != nil {
		return string(raw)
	}
	b, _ := json.Marshal(x)
	return string(b)
}

// CheckStackInputs refuses to deploy a version that changes a template
// input marked as forcing a new stack while the stack Grape applied still
// exists. The database's identity guard knows only region and backend (it
// cannot read templates), so this is where a change written from the
// browser or by SQL is stopped. A version queued behind the destroy by
// `--replace-stack` runs when the config is no longer applied and passes.
func CheckStackInputs(cat *render.Catalog, cfg store.Config, a store.Applied, appliedSpec, spec json.RawMessage, version int) *Refusal {
	if !a.Applied || a.Version == version || appliedSpec == nil {
		return nil
	}
	changes := StackInputChanges(cat, appliedSpec, spec)
	if len(changes) == 0 {
		return nil
	}
	return &Refusal{Kind: store.KindBadConfig, Msg: fmt.Sprintf(
		"invalid intent: v%d of config %s changes %s; the stack v%d applied still exists, and applying would replace it. Nothing was rendered. "+
			"To replace the stack on purpose, store the intent with `grape config apply --cluster %s --name %s --replace-stack -f FILE` (a destroy and an apply, each awaiting approval), or destroy it first (`grape deploy --cluster %s --config %s --action destroy`); otherwise store the intent again with the applied value",
		version, cfg.Name, strings.Join(changes, "; "), a.Version, cfg.ClusterID, cfg.Name, cfg.ClusterID, cfg.Name)}
}
