package render

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// BackendSpec is where a config's Terraform state lives.
//
// Type "local" (the default, when the intent has no backend) renders
// `backend "local" {}` with no path: the agent passes
// -backend-config=path=<data dir>/state/... at init, so state never lands in
// the workspace repository. Type "s3" renders an S3 backend with
// use_lockfile = true (S3-native locking).
type BackendSpec struct {
	Type          string `json:"type"`
	Bucket        string `json:"bucket,omitempty"`
	Key           string `json:"key,omitempty"`
	Region        string `json:"region,omitempty"`
	UsePathStyle  bool   `json:"use_path_style,omitempty"`
	DynamoDBTable string `json:"dynamodb_table,omitempty"`
	Encrypt       bool   `json:"encrypt,omitempty"`
	KMSKeyID      string `json:"kms_key_id,omitempty"`
	// Endpoint is a custom S3 endpoint (MinIO, moto, a VPC endpoint).
	Endpoint string `json:"endpoint,omitempty"`
}

// DefaultStateKey is the S3 key of a config's state when the intent names
// none. It uses the config's id, not its name, so renaming a config never
// orphans its state.
func DefaultStateKey(m Meta) string {
	return "grape/" + m.ClusterID + "/" + m.ConfigID + "/terraform.tfstate"
}

var backendKeys = map[string][]string{
	"local": {"type"},
	"s3":    {"bucket", "dynamodb_table", "encrypt", "endpoint", "key", "kms_key_id", "region", "type", "use_path_style"},
}

var (
	bucketRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	dynamoTableRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]{3,255}$`)
	kmsKeyRE        = regexp.MustCompile(`^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+|alias/[A-Za-z0-9/_-]+|[0-9a-f-]{36})$`)
	stateKeyCharsRE = regexp.MustCompile(`^[A-Za-z0-9!_.*'()/${}%=+@:, -]+$`)
)

// backend validates the "backend" object. keep says whether it belongs in
// the normalised intent (an explicit local backend is the default and is
// dropped).
func (v *validator) backend(path string, val any) (BackendSpec, bool, bool) {
	o, ok := val.(*object)
	if !ok {
		v.p.add(path, `must be a JSON object such as {"type": "s3", "bucket": "my-state"}, got %s`, describe(val))
		return BackendSpec{}, false, false
	}
	n := len(v.p.list)
	tv, has := o.get("type")
	if !has {
		v.p.add(JoinPath(path, "type"), `is missing; set "s3" (state in an S3 bucket) or "local" (state on the agent's disk)`)
		return BackendSpec{}, false, false
	}
	typ, isStr := tv.(string)
	if !isStr || (typ != "s3" && typ != "local") {
		v.p.add(JoinPath(path, "type"), `must be "s3" or "local", got %s`, describe(tv))
		return BackendSpec{}, false, false
	}
	spec := BackendSpec{Type: typ, Encrypt: typ == "s3"}
	valid := backendKeys[typ]
	for _, k := range o.keys {
		kp := JoinPath(path, k)
		if k == "type" {
			continue
		}
		if !slices.Contains(valid, k) {
			if typ == "local" && k == "path" {
				v.p.add(kp, "must not be set: the agent keeps local state in its data directory, outside the workspace repository; remove it")
				continue
			}
			v.p.add(kp, "unknown key for a %s backend%s; valid keys: %s", typ, suggest(k, valid), strings.Join(valid, ", "))
			continue
		}
		kv := o.m[k]
		switch k {
		case "use_path_style", "encrypt":
			b, ok := kv.(bool)
			if !ok {
				v.p.add(kp, "must be true or false, got %s", describe(kv))
				continue
			}
			if k == "encrypt" {
				spec.Encrypt = b
			} else {
				spec.UsePathStyle = b
			}
			continue
		}
		s, ok := kv.(string)
		if !ok {
			v.p.add(kp, "must be a string, got %s", describe(kv))
			continue
		}
		switch k {
		case "bucket":
			if !bucketRE.MatchString(s) || strings.Contains(s, "..") {
				v.p.add(kp, "%q is not an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit", truncate(s, 70))
			}
			spec.Bucket = s
		case "key":
			switch {
			case len(s) > 1024:
				v.p.add(kp, "is %d characters; S3 keys are at most 1024", len(s))
			case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/"):
				v.p.add(kp, "must not start or end with /; use a path such as \"team/cluster/terraform.tfstate\"")
			case hasDotSegment(s):
				v.p.add(kp, "must not contain empty, . or .. path segments")
			case !stateKeyCharsRE.MatchString(s):
				v.p.add(kp, "has characters outside letters, digits and ! _ . * ' ( ) / $ { } %% = + @ : , - and space")
			}
			spec.Key = s
		case "region":
			if !regionRE.MatchString(s) {
				v.p.add(kp, "%q is not an AWS region name; use one such as %q", truncate(s, 40), DefaultRegion)
			}
			spec.Region = s
		case "dynamodb_table":
			if !dynamoTableRE.MatchString(s) {
				v.p.add(kp, "%q is not a DynamoDB table name: 3-255 letters, digits, _ . and -", truncate(s, 70))
			}
			spec.DynamoDBTable = s
		case "kms_key_id":
			if !kmsKeyRE.MatchString(s) {
				v.p.add(kp, "must be a KMS key ARN, alias ARN, alias/<name> or key id")
			}
			spec.KMSKeyID = s
		case "endpoint":
			u, err := url.Parse(s)
			switch {
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				v.p.add(kp, "must be an http(s) URL such as \"https://s3.example.com\"")
			case u.User != nil:
				// Credentials come from the agent's environment; a URL
				// with a password would be committed to git.
				v.p.add(kp, "must not contain credentials; give the agent AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead")
			case u.RawQuery != "" || u.Fragment != "":
				v.p.add(kp, "must not have a query or fragment")
			}
			spec.Endpoint = s
		}
	}
	if typ == "s3" && spec.Bucket == "" {
		if _, has := o.get("bucket"); !has {
			v.p.add(JoinPath(path, "bucket"), "is required for an s3 backend; name the bucket that holds the state (create it first, with versioning on)")
		}
	}
	if len(v.p.list) != n {
		return BackendSpec{}, false, false
	}
	return spec, typ == "s3", true
}

func hasDotSegment(key string) bool {
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
