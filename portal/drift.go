package portal

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/google/uuid"

	"github.com/grapehq/grape/drift"
	"github.com/grapehq/grape/plandiff"
	"github.com/grapehq/grape/store"
)

// DriftView is a drift report with its config's name, as the pages show it.
type DriftView struct {
	store.DriftReport
	ConfigName string
	// NotRemediable is why drift.DecideRemediation refuses this report
	// (empty when the Remediate button applies); Superseded names the
	// apply that ran after the check, which the "drifted" is older than.
	NotRemediable string
	Superseded    *uuid.UUID
}

// DriftDetails is the details column: what a re-plan would change.
type DriftDetails struct {
	Resources []DriftResource `json:"resources"`
}

// DriftResource is one resource that drifted.
type DriftResource struct {
	Address    string   `json:"address"`
	Action     string   `json:"action"`
	Attributes []string `json:"attributes"`
	// Changes are the values old → new (runner.DriftedResource; redacted,
	// sensitive ones without a value). Reports from before they were
	// recorded have only the attribute names.
	Changes          []plandiff.Attribute `json:"changes"`
	SensitiveChanged bool                 `json:"sensitive_changed"`
}

// Rows are the changes as the diff tables show them.
func (r DriftResource) Rows() []diffAttr {
	out := make([]diffAttr, 0, len(r.Changes))
	for _, a := range r.Changes {
		out = append(out, diffAttribute(a))
	}
	return out
}

// Resources decodes the report's details; a malformed column yields none
// (the page still shows the status).
func (d DriftView) Resources() []DriftResource {
	var det DriftDetails
	if len(d.Details) > 0 {
		_ = json.Unmarshal(d.Details, &det)
	}
	return det.Resources
}

// Remediable says whether the remediate button applies: drift found, a
// commit to re-apply, and drift.DecideRemediation allows it — the same rule
// the remediate handler applies, so the button never leads to a 409.
func (d DriftView) Remediable() bool {
	return d.Status == store.DriftDrifted && d.CommitSHA != nil && isSHA(*d.CommitSHA) && d.NotRemediable == ""
}

// decide fills in what drift.DecideRemediation says of a drifted report
// (other reports have no button to decide on).
func (s *Server) decide(ctx context.Context, v *DriftView) error {
	if v.Status != store.DriftDrifted {
		return nil
	}
	facts, err := s.store(ctx).RemediationFacts(ctx, v.DriftReport)
	if err != nil {
		return err
	}
	v.Superseded = facts.DeployedAfter
	var no *drift.NotRemediableError
	if err := drift.DecideRemediation(v.DriftReport, facts); errors.As(err, &no) {
		v.NotRemediable = no.Reason
	}
	return nil
}

// ConfigDrift is a config with its latest drift report (nil: never checked).
type ConfigDrift struct {
	ConfigID   uuid.UUID
	ClusterID  string
	ConfigName string
	Latest     *DriftView
	// Role is the user's on the cluster: Check now and Remediate need
	// operator.
	Role store.Role
}

// latestDrift lists the configs of a cluster ("" for all) with their newest
// drift report.
func (s *Server) latestDrift(ctx context.Context, clusterID string) ([]ConfigDrift, error) {
	cds, err := s.store(ctx).ListConfigDrift(ctx, clusterID)
	if err != nil {
		return nil, err
	}
	out := make([]ConfigDrift, 0, len(cds))
	roles := map[string]store.Role{}
	for _, c := range cds {
		role, ok := roles[c.ClusterID]
		if !ok {
			if role, err = s.role(ctx, c.ClusterID); err != nil {
				return nil, err
			}
			roles[c.ClusterID] = role
		}
		cd := ConfigDrift{ConfigID: c.ConfigID, ClusterID: c.ClusterID, ConfigName: c.ConfigName, Role: role}
		if c.Latest != nil {
			cd.Latest = &DriftView{DriftReport: *c.Latest, ConfigName: c.ConfigName}
			if err := s.decide(ctx, cd.Latest); err != nil {
				return nil, err
			}
		}
		out = append(out, cd)
	}
	return out, nil
}

// latestDriftFor is the newest report of one config, or nil.
func (s *Server) latestDriftFor(ctx context.Context, c store.Config) (*DriftView, error) {
	reports, err := s.store(ctx).LatestDriftReports(ctx, c.ClusterID, &c.ID)
	if err != nil || len(reports) == 0 {
		return nil, err
	}
	v := &DriftView{DriftReport: reports[0], ConfigName: c.Name}
	return v, s.decide(ctx, v)
}
