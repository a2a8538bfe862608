package render

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fe is shorthand for an expected field error.
func fe(path, msg string) FieldError { return FieldError{Path: path, Message: msg} }

// TestValidateErrors has one case per class of intent error, each with the
// exact message a person sees: where the problem is and how to fix it.
func TestValidateErrors(t *testing.T) {
	c := catalog(t)
	deep := `{"modules": {"vpc": {"availability_zones": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}}`
	huge := `{"tags": {"a": "` + strings.Repeat("x", MaxIntentSize) + `"}}`

	cases := []struct {
		name string
		spec string
		want []FieldError
	}{
		// The document as a whole.
		{"empty", "  \n", []FieldError{fe("", `is empty: write a JSON object such as {"region": "eu-central-1", "modules": {"vpc": {}}}`)}},
		{"not JSON", `{"region": }`, []FieldError{fe("", "not valid JSON at line 1, column 12: invalid character '}' looking for beginning of value")}},
		{"truncated", `{"region": "eu-central-1"`, []FieldError{fe("", "not valid JSON: unexpected end of input")}},
		{"trailing content", `{} {}`, []FieldError{fe("", "unexpected content after the JSON value at line 1, column 4")}},
		{"not an object", `["vpc"]`, []FieldError{fe("", `must be a JSON object such as {"region": "eu-central-1", "modules": {"vpc": {}}}, got an array`)}},
		{"too large", huge, []FieldError{fe("", "is 1048595 bytes; the limit is 1048576 (1 MiB): keep only what differs from the module defaults")}},
		{"too deep", deep, []FieldError{fe("modules.vpc.availability_zones[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]", "nested more than 32 levels deep; flatten the structure")}},
		{"invalid UTF-8", "{\"region\": \"eu-central-1\",\n \"environment\": \"pr\xffd\"}", []FieldError{fe("", "not valid UTF-8 at line 2, column 20: save the file as UTF-8")}},
		{"NUL character", `{"environment": "prod\u0000"}`, []FieldError{fe("environment", `contains a NUL character (\u0000); remove it`)}},
		{"duplicate key", `{"region": "eu-central-1", "region": "eu-west-1"}`, []FieldError{fe("region", "appears twice in the same object; keep one")}},

		// Top-level keys.
		{"unknown top-level key", `{"regoin": "eu-west-1"}`, []FieldError{fe("regoin", `unknown key (did you mean "region"?); valid keys: backend, environment, modules, region, tags`)}},
		{"region not an AWS region", `{"region": "Frankfurt"}`, []FieldError{fe("region", `"Frankfurt" is not an AWS region name; use one such as "eu-central-1"`)}},
		{"region wrong type", `{"region": 1}`, []FieldError{fe("region", "must be a string, got number 1")}},
		{"environment bad characters", `{"environment": "prod;drop"}`, []FieldError{fe("environment", `"prod;drop" has characters AWS does not allow in a tag value; use letters, digits, spaces and _ . : / = + - @`)}},
		{"modules not an object", `{"modules": ["vpc"]}`, []FieldError{fe("modules", `must be a JSON object of modules such as {"vpc": {}}, got an array`)}},

		// Tags.
		{"tag reserved by AWS", `{"tags": {"aws:owner": "x"}}`, []FieldError{fe(`tags["aws:owner"]`, "tag names starting with aws: are reserved by AWS; choose another name")}},
		{"tag reserved by Grape", `{"tags": {"grape:cluster": "x"}}`, []FieldError{fe(`tags["grape:cluster"]`, "tag names starting with grape: are set by Grape itself (grape:cluster, grape:config, grape:environment); choose another name")}},
		{"tag value characters", `{"tags": {"team": "${var.x}"}}`, []FieldError{fe("tags.team", `tag value "${var.x}" has characters AWS does not allow; use letters, digits, spaces and _ . : / = + - @`)}},
		{"tag value not a string", `{"tags": {"cost-center": 42}}`, []FieldError{fe("tags.cost-center", "must be a string, got number 42")}},
		{"module tags checked too", `{"modules": {"vpc": {"tags": {"aws:x": "y"}}}}`, []FieldError{fe(`modules.vpc.tags["aws:x"]`, "tag names starting with aws: are reserved by AWS; choose another name")}},

		// Modules and their inputs.
		{"unknown module", `{"modules": {"vcp": {}}}`, []FieldError{fe("modules.vcp", `unknown module (did you mean "vpc"?); valid modules: vpc, eks, rds, karpenter`)}},
		{"module not an object", `{"modules": {"vpc": true}}`, []FieldError{fe("modules.vpc", "must be a JSON object of the module's inputs ({} for all defaults), got true")}},
		{"enabled not a bool", `{"modules": {"vpc": {"enabled": "yes"}}}`, []FieldError{fe("modules.vpc.enabled", `must be true or false, got string "yes"`)}},
		{"unknown input", `{"modules": {"vpc": {"cdir": "10.1.0.0/16"}}}`, []FieldError{fe("modules.vpc.cdir", `unknown input (did you mean "cidr"?) for module vpc; valid inputs: availability_zones, az_count, cidr, map_public_ip_on_launch, name, nat_gateway, private_subnet_cidrs, private_subnet_tags, public_subnet_cidrs, public_subnet_tags, tags`)}},
		{"wrong type: string for number", `{"modules": {"vpc": {"az_count": "3"}}}`, []FieldError{fe("modules.vpc.az_count", `must be a number, got string "3"`)}},
		{"wrong type: scalar for list", `{"modules": {"vpc": {"availability_zones": "eu-central-1a"}}}`, []FieldError{fe("modules.vpc.availability_zones", `must be a JSON array (list(string)), got string "eu-central-1a"`)}},
		{"wrong type: list element", `{"modules": {"vpc": {"availability_zones": ["eu-central-1a", 2]}}}`, []FieldError{fe("modules.vpc.availability_zones[1]", "must be a string, got number 2")}},
		{"wrong type: nested object attribute", `{"modules": {"vpc": {}, "eks": {"addons": {"coredns": {"addon_version": 1}}}}}`, []FieldError{fe("modules.eks.addons.coredns.addon_version", "must be a string, got number 1")}},
		{"unknown nested attribute", `{"modules": {"vpc": {}, "eks": {"addons": {"coredns": {"addon_versoin": "v1.11.1-eksbuild.1"}}}}}`, []FieldError{fe("modules.eks.addons.coredns.addon_versoin", `unknown attribute (did you mean "addon_version"?); valid attributes: addon_version, configuration_values, resolve_conflicts_on_create, resolve_conflicts_on_update`)}},
		{"null input", `{"modules": {"vpc": {"cidr": null}}}`, []FieldError{fe("modules.vpc.cidr", `must not be null; remove the key to get the default ("10.0.0.0/16")`)}},
		{"sensitive input", `{"modules": {"vpc": {}, "rds": {"master_password": "hunter2hunter2"}}}`, []FieldError{fe("modules.rds.master_password", "is sensitive and must not be in the intent (intents are stored in the database and committed to git): remove it and set TF_VAR_rds_master_password in the agent's environment instead, or leave it unset to get the module's default (null)")}},

		// Dependencies between modules.
		{"eks without vpc", `{"modules": {"eks": {}}}`, []FieldError{fe("modules.eks", `needs module vpc for subnet_ids: add "vpc": {} to modules, or set modules.eks.subnet_ids`)}},
		{"rds without vpc", `{"modules": {"rds": {}}}`, []FieldError{fe("modules.rds", `needs module vpc for subnet_ids and vpc_id: add "vpc": {} to modules, or set modules.rds.subnet_ids and modules.rds.vpc_id`)}},
		{"karpenter without eks", `{"modules": {"vpc": {}, "karpenter": {}}}`, []FieldError{fe("modules.karpenter", `needs module eks for cluster_name: add "eks": {} to modules, or set modules.karpenter.cluster_name`)}},
		{"producer disabled", `{"modules": {"vpc": {"enabled": false}, "eks": {}}}`, []FieldError{fe("modules.eks", "needs module vpc for subnet_ids: enable it (modules.vpc.enabled is false), or set modules.eks.subnet_ids")}},

		// The templates' own validation blocks, evaluated before any plan.
		{"validation: range", `{"modules": {"vpc": {"az_count": 9}}}`, []FieldError{fe("modules.vpc.az_count", "az_count must be a whole number from 1 to 6.")}},
		{"validation: whole number", `{"modules": {"vpc": {"az_count": 2.5}}}`, []FieldError{fe("modules.vpc.az_count", "az_count must be a whole number from 1 to 6.")}},
		{"validation: CIDR syntax", `{"modules": {"vpc": {"cidr": "10.0.0.0/33"}}}`, []FieldError{fe("modules.vpc.cidr", `cidr must be an IPv4 CIDR block from /16 to /24, such as "10.0.0.0/16".`)}},
		{"validation: CIDR host bits", `{"modules": {"vpc": {"cidr": "10.0.0.1/16"}}}`, []FieldError{fe("modules.vpc.cidr", `cidr must start at its network address (for example "10.0.0.0/16", not "10.0.0.1/16").`)}},
		{"validation: enum", `{"modules": {"vpc": {"nat_gateway": "double"}}}`, []FieldError{fe("modules.vpc.nat_gateway", `nat_gateway must be "single", "per_az" or "none".`)}},
		{"validation: list of CIDRs", `{"modules": {"vpc": {}, "rds": {"allowed_cidr_blocks": ["10.0.0.0/8", "office"]}}}`, []FieldError{fe("modules.rds.allowed_cidr_blocks", `allowed_cidr_blocks must hold IPv4 CIDR blocks such as "10.0.0.0/16".`)}},
		{"validation: across inputs", `{"modules": {"vpc": {}, "eks": {"node_max_size": 1}}}`, []FieldError{fe("modules.eks.node_desired_size", "node_desired_size must be a whole number from node_min_size to node_max_size.")}},
		{"validation: list length against another input", `{"modules": {"vpc": {"az_count": 3, "availability_zones": ["eu-central-1a", "eu-central-1b"]}}}`, []FieldError{fe("modules.vpc.availability_zones", "availability_zones must be empty or list exactly az_count zones.")}},
		{"validation: explicit subnets need two zones", `{"modules": {"eks": {"subnet_ids": ["subnet-0123456789abcdef0"]}}}`, []FieldError{fe("modules.eks.subnet_ids", "subnet_ids must list at least two subnets in different availability zones (EKS requires two zones).")}},

		// Checks across inputs and modules that no validation block expresses.
		{"subnet outside the VPC", `{"modules": {"vpc": {"private_subnet_cidrs": ["10.0.0.0/20", "10.1.0.0/20"]}}}`, []FieldError{fe("modules.vpc.private_subnet_cidrs[1]", "10.1.0.0/20 is outside the VPC CIDR 10.0.0.0/16; pick a block inside it")}},
		{"subnets overlap", `{"modules": {"vpc": {"private_subnet_cidrs": ["10.0.0.0/20", "10.0.16.0/20"], "public_subnet_cidrs": ["10.0.8.0/24", "10.0.200.0/24"]}}}`, []FieldError{fe("modules.vpc.public_subnet_cidrs[0]", "10.0.8.0/24 overlaps modules.vpc.private_subnet_cidrs[0] (10.0.0.0/20); subnets must not overlap")}},
		{"subnets overlap the default blocks", `{"modules": {"vpc": {"public_subnet_cidrs": ["10.0.16.0/24", "10.0.144.0/20"]}}}`, []FieldError{fe("modules.vpc.public_subnet_cidrs[0]", "10.0.16.0/24 overlaps the default private_subnet_cidrs block for zone 1 (10.0.16.0/20); subnets must not overlap")}},
		{"one zone for EKS", `{"modules": {"vpc": {"az_count": 1}, "eks": {}}}`, []FieldError{fe("modules.vpc.az_count", "module eks needs subnets in at least two availability zones; set az_count to 2 or more, or give modules.eks.subnet_ids")}},

		// Backend.
		{"backend type missing", `{"backend": {"bucket": "state"}}`, []FieldError{fe("backend.type", `is missing; set "s3" (state in an S3 bucket) or "local" (state on the agent's disk)`)}},
		{"backend type unknown", `{"backend": {"type": "gcs"}}`, []FieldError{fe("backend.type", `must be "s3" or "local", got string "gcs"`)}},
		{"backend bucket missing", `{"backend": {"type": "s3"}}`, []FieldError{fe("backend.bucket", "is required for an s3 backend; name the bucket that holds the state (create it first, with versioning on)")}},
		{"backend bucket name", `{"backend": {"type": "s3", "bucket": "My_State"}}`, []FieldError{fe("backend.bucket", `"My_State" is not an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit`)}},
		{"backend key path", `{"backend": {"type": "s3", "bucket": "state", "key": "a/../b.tfstate"}}`, []FieldError{fe("backend.key", "must not contain empty, . or .. path segments")}},
		{"backend unknown key", `{"backend": {"type": "s3", "bucket": "state", "acl": "private"}}`, []FieldError{fe("backend.acl", "unknown key for a s3 backend; valid keys: bucket, dynamodb_table, encrypt, endpoint, key, kms_key_id, region, type, use_path_style")}},
		{"backend endpoint credentials", `{"backend": {"type": "s3", "bucket": "state", "endpoint": "https://admin:secret@minio.internal:9000"}}`, []FieldError{fe("backend.endpoint", "must not contain credentials; give the agent AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead")}},
		{"local backend path", `{"backend": {"type": "local", "path": "state/terraform.tfstate"}}`, []FieldError{fe("backend.path", "must not be set: the agent keeps local state in its data directory, outside the workspace repository; remove it")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := c.Validate([]byte(tc.spec))
			require.Error(t, err)
			assert.Nil(t, in)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve, "error is %T, want *ValidationError: %v", err, err)
			assert.Equal(t, tc.want, ve.Errors)
		})
	}
}

// TestValidateReportsEveryError checks that one pass finds every problem
// and that Error() lists them all.
func TestValidateReportsEveryError(t *testing.T) {
	_, err := catalog(t).Validate([]byte(`{
		"region": "moon-1",
		"modules": {"vpc": {"az_count": 0, "nat": "single"}, "karpenter": {}}
	}`))
	require.Error(t, err)
	assert.Equal(t, `invalid intent (4 errors):
  - region: "moon-1" is not an AWS region name; use one such as "eu-central-1"
  - modules.vpc.nat: unknown input (did you mean "name"?) for module vpc; valid inputs: availability_zones, az_count, cidr, map_public_ip_on_launch, name, nat_gateway, private_subnet_cidrs, private_subnet_tags, public_subnet_cidrs, public_subnet_tags, tags
  - modules.karpenter: needs module eks for cluster_name: add "eks": {} to modules, or set modules.karpenter.cluster_name
  - modules.vpc.az_count: az_count must be a whole number from 1 to 6.`, err.Error())

	_, err = catalog(t).Validate([]byte(`{"region": "moon-1"}`))
	assert.EqualError(t, err, `invalid intent: region: "moon-1" is not an AWS region name; use one such as "eu-central-1"`)
}

func TestValidateAccepts(t *testing.T) {
	c := catalog(t)
	cases := []struct {
		name    string
		spec    string
		enabled []string
		region  string
		backend BackendSpec
	}{
		{"vpc alone", `{"region": "eu-central-1", "modules": {"vpc": {}}}`, []string{"vpc"}, "eu-central-1", BackendSpec{Type: "local"}},
		{"all four, default region", `{"modules": {"karpenter": {}, "rds": {}, "eks": {}, "vpc": {}}}`, []string{"vpc", "eks", "rds", "karpenter"}, DefaultRegion, BackendSpec{Type: "local"}},
		{"nothing", `{}`, nil, DefaultRegion, BackendSpec{Type: "local"}},
		{"eks on explicit subnets", `{"region": "us-east-1", "modules": {"eks": {"subnet_ids": ["subnet-a", "subnet-b"]}}}`, []string{"eks"}, "us-east-1", BackendSpec{Type: "local"}},
		{"karpenter for an existing cluster", `{"modules": {"karpenter": {"cluster_name": "legacy"}}}`, []string{"karpenter"}, DefaultRegion, BackendSpec{Type: "local"}},
		{"disabled module skips dependency checks", `{"modules": {"vpc": {}, "karpenter": {"enabled": false}}}`, []string{"vpc"}, DefaultRegion, BackendSpec{Type: "local"}},
		{"enabled true", `{"modules": {"vpc": {"enabled": true}}}`, []string{"vpc"}, DefaultRegion, BackendSpec{Type: "local"}},
		{"explicit local backend", `{"backend": {"type": "local"}}`, nil, DefaultRegion, BackendSpec{Type: "local"}},
		{"s3 backend, region from the intent", `{"region": "eu-west-1", "backend": {"type": "s3", "bucket": "acme-tf-state", "use_path_style": true, "dynamodb_table": "locks"}}`, nil, "eu-west-1",
			BackendSpec{Type: "s3", Bucket: "acme-tf-state", Region: "eu-west-1", UsePathStyle: true, DynamoDBTable: "locks", Encrypt: true}},
		{"s3 backend, everything set", `{"backend": {"type": "s3", "bucket": "acme-tf-state", "key": "teams/platform/prod.tfstate", "region": "us-west-2", "encrypt": false, "kms_key_id": "alias/terraform", "endpoint": "https://s3.us-west-2.amazonaws.com"}}`, nil, DefaultRegion,
			BackendSpec{Type: "s3", Bucket: "acme-tf-state", Key: "teams/platform/prod.tfstate", Region: "us-west-2", KMSKeyID: "alias/terraform", Endpoint: "https://s3.us-west-2.amazonaws.com"}},
		{"explicit subnets that fit", `{"modules": {"vpc": {"az_count": 3, "cidr": "10.20.0.0/16", "private_subnet_cidrs": ["10.20.0.0/19", "10.20.32.0/19", "10.20.64.0/19"], "public_subnet_cidrs": ["10.20.128.0/24", "10.20.129.0/24", "10.20.130.0/24"]}}}`, []string{"vpc"}, DefaultRegion, BackendSpec{Type: "local"}},
		{"optional object attributes", `{"modules": {"vpc": {}, "eks": {"addons": {"coredns": {}, "vpc-cni": {"addon_version": "v1.19.0-eksbuild.1", "configuration_values": "{\"env\":{\"ENABLE_PREFIX_DELEGATION\":\"true\"}}"}}}}}`, []string{"vpc", "eks"}, DefaultRegion, BackendSpec{Type: "local"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := c.Validate([]byte(tc.spec))
			require.NoError(t, err)
			assert.Equal(t, tc.enabled, in.EnabledModules())
			assert.Equal(t, tc.region, in.Region())
			assert.Equal(t, tc.backend, in.Backend())
		})
	}
}

// TestIntentNormalised checks that spelling does not matter: key order,
// number forms, whitespace and "enabled": true give the same intent.json.
func TestIntentNormalised(t *testing.T) {
	c := catalog(t)
	a, err := c.Validate([]byte(`{"modules": {"vpc": {"az_count": 3.0, "enabled": true}, "eks": {"node_max_size": 5e0}}, "tags": {"b": "2", "a": "1"}}`))
	require.NoError(t, err)
	b, err := c.Validate([]byte(`{"tags":{"a":"1","b":"2"},"region":"eu-central-1","modules":{"eks":{"node_max_size":5},"vpc":{"az_count":3}}}`))
	require.NoError(t, err)
	assert.Equal(t, string(a.JSON()), string(b.JSON()))
	assert.JSONEq(t, `{
  "modules": {
    "eks": {
      "node_max_size": 5
    },
    "vpc": {
      "az_count": 3
    }
  },
  "region": "eu-central-1",
  "tags": {
    "a": "1",
    "b": "2"
  }
}
`, string(a.JSON()))
	assert.Equal(t, map[string]string{"a": "1", "b": "2"}, a.Tags())

	// A disabled module keeps its settings (so switching it back on is a
	// one-line change) but contributes nothing to the rendering.
	d, err := c.Validate([]byte(`{"modules": {"vpc": {}, "rds": {"enabled": false, "instance_class": "db.r6g.large"}}}`))
	require.NoError(t, err)
	assert.Contains(t, string(d.JSON()), `"enabled": false`)
	assert.Empty(t, d.Inputs("rds"))
}

// TestValidateMissingRequired uses a template set with a required input
// that nothing wires, which Grape's own modules do not have.
func TestValidateMissingRequired(t *testing.T) {
	c, err := LoadDir("testdata/templates-extra")
	require.NoError(t, err)
	_, err = c.Validate([]byte(`{"modules": {"dns": {}}}`))
	var ve *ValidationError
	require.ErrorAs(t, err, &ve, "got %v", err)
	assert.Equal(t, []FieldError{fe("modules.dns.zone_name", "required input is missing; set it (type string): DNS zone to create, such as \"internal.example.com\".")}, ve.Errors)

	in, err := c.Validate([]byte(`{"modules": {"dns": {"zone_name": "internal.example.com"}}}`))
	require.NoError(t, err)
	assert.Equal(t, []string{"dns"}, in.EnabledModules())
}

func TestValidateNumberRange(t *testing.T) {
	_, err := catalog(t).Validate([]byte(`{"modules": {"vpc": {"az_count": 1e999999999}}}`))
	var ve *ValidationError
	require.ErrorAs(t, err, &ve, "got %v", err)
	assert.Equal(t, []FieldError{fe("modules.vpc.az_count", "number 1e999999999 is out of range")}, ve.Errors)
}
