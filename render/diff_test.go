package render

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDiffIntent(t *testing.T) {
	old := `{"modules": {"vpc": {"cidr": "10.0.0.0/16", "availability_zones": ["a", "b"]}, "karpenter": {}}, "region": "eu-central-1", "tags": {"team": "infra"}}`
	cases := []struct {
		name     string
		old, new string
		want     []string
	}{
		{"unchanged, spelled differently", old, `{"region":"eu-central-1","tags":{"team":"infra"},"modules":{"karpenter":{},"vpc":{"availability_zones":["a","b"],"cidr":"10.0.0.0/16"}}}`, []string{}},
		{"changes, additions, removals", old,
			`{"modules": {"vpc": {"cidr": "10.1.0.0/16", "availability_zones": ["a", "b", "c"], "az_count": 3}, "rds": {"instance_class": "db.t4g.small", "multi_az": true}}, "region": "eu-central-1"}`,
			[]string{
				`- modules.karpenter`,
				`+ modules.rds`,
				`+ modules.rds.instance_class: "db.t4g.small"`,
				`+ modules.rds.multi_az: true`,
				`modules.vpc.availability_zones: ["a","b"] → ["a","b","c"]`,
				`+ modules.vpc.az_count: 3`,
				`modules.vpc.cidr: "10.0.0.0/16" → "10.1.0.0/16"`,
				`- tags`,
				`- tags.team: "infra"`,
			}},
		{"first rendering", "", `{"modules": {"vpc": {}}, "region": "eu-west-1"}`, []string{`+ modules`, `+ modules.vpc`, `+ region: "eu-west-1"`}},
		{"module switched off", `{"modules": {"rds": {"multi_az": true}}}`, `{"modules": {"rds": {"enabled": false, "multi_az": true}}}`, []string{`+ modules.rds.enabled: false`}},
		{"type change", `{"modules": {"eks": {"node_labels": {"a": "1"}}}}`, `{"modules": {"eks": {"node_labels": ["a"]}}}`, []string{`modules.eks.node_labels: {"a":"1"} → ["a"]`}},
		{"keys needing quotes", `{"tags": {"cost center": "1"}}`, `{"tags": {"cost center": "2"}}`, []string{`tags["cost center"]: "1" → "2"`}},
		{"not JSON", `{`, `{}`, []string{`intent not comparable: old intent: not valid JSON: unexpected end of input`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, DiffIntent([]byte(tc.old), []byte(tc.new)))
		})
	}
}
