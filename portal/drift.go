package portal

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/grapehq/grape/store"
)

// DriftView is a drift report with its config's name, as the pages show it.
type DriftView struct {
	store.DriftReport
	ConfigName string
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

// Remediable says whether the remediate button applies: drift found, and a
// commit to re-apply.
func (d DriftView) Remediable() bool {
	return d.Status == store.DriftDrifted && d.CommitSHA != nil && isSHA(*d.CommitSHA)
}

// ConfigDrift is a config with its latest drift report (nil: never checked).
type ConfigDrift struct {
	ConfigID   uuid.UUID
	ClusterID  string
	ConfigName string
	Latest     *DriftView
}

// latestDrift lists the configs of a cluster ("" for all) with their newest
// drift report.
func (s *Server) latestDrift(ctx context.Context, clusterID string) ([]ConfigDrift, error) {
	cfgs, err := s.st.ListConfigs(ctx, clusterID)
	if err != nil {
		return nil, err
	}
	reports, err := s.st.LatestDriftReports(ctx, clusterID, nil)
	if err != nil {
		return nil, err
	}
	byConfig := make(map[uuid.UUID]store.DriftReport, len(reports))
	for _, r := range reports {
		byConfig[r.ConfigID] = r
	}
	out := make([]ConfigDrift, 0, len(cfgs))
	for _, c := range cfgs {
		cd := ConfigDrift{ConfigID: c.ID, ClusterID: c.ClusterID, ConfigName: c.Name}
		if r, ok := byConfig[c.ID]; ok {
			cd.Latest = &DriftView{DriftReport: r, ConfigName: c.Name}
		}
		out = append(out, cd)
	}
	return out, nil
}

// latestDriftFor is the newest report of one config, or nil.
func (s *Server) latestDriftFor(ctx context.Context, c store.Config) (*DriftView, error) {
	reports, err := s.st.LatestDriftReports(ctx, c.ClusterID, &c.ID)
	if err != nil || len(reports) == 0 {
		return nil, err
	}
	return &DriftView{DriftReport: reports[0], ConfigName: c.Name}, nil
}

// remediationBlockerQuery (a portal rule, so its SQL lives here) explains why re-applying a report's commit would be
// wrong now, or returns "": a newer report supersedes it, or the config was
// deployed after the check (the report's commit may be older than what is
// applied, and applying it would roll that deployment back).
const remediationBlockerQuery = `
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM drift_reports n WHERE n.config_id = $1 AND (n.checked_at, n.id) > ($2, $3))
        THEN 'a newer drift check of this config exists: remediate from its report'
    WHEN EXISTS (SELECT 1 FROM deployments d WHERE d.config_id = $1 AND d.action IN ('apply', 'destroy')
                 AND d.status = 'succeeded' AND d.finished_at > $2)
        THEN 'the config was deployed after this drift check: run a new drift check first'
    ELSE '' END`

func (s *Server) remediationBlocker(ctx context.Context, r store.DriftReport) (string, error) {
	var why string
	if err := s.st.Pool().QueryRow(ctx, remediationBlockerQuery, r.ConfigID, r.CheckedAt, r.ID).Scan(&why); err != nil {
		return "", fmt.Errorf("checking drift report %s: %w", r.ID, err)
	}
	return why, nil
}
