#!/usr/bin/env bash
# Regenerates the real plan fixtures under policy/testdata/ (see README.md):
# grape render → terraform init/plan against moto → terraform show -json →
# trim.py. Needs grape's build deps, terraform, moto_server, python3 and the
# provider mirror /opt/tf-plugins. Takes ~2 minutes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'kill $moto_pid 2>/dev/null || true; rm -rf "$work"' EXIT

(cd "$root" && go build -o "$work/grape" ./cmd/grape)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO_IAM_LOAD_MANAGED_POLICIES=true moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do curl -s "http://127.0.0.1:$port" >/dev/null && break; sleep 0.2; done

printf 'provider_installation {\n  filesystem_mirror {\n    path = "/opt/tf-plugins"\n  }\n}\n' >"$work/terraformrc"
export TF_CLI_CONFIG_FILE="$work/terraformrc" TF_IN_AUTOMATION=1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=eu-central-1
# A sensitive value, so the fixture shows where plans keep them in clear.
export TF_VAR_rds_master_password='fixture-password-not-a-secret-1'

render() { # name intent-file
  rm -rf "$work/$1"
  "$work/grape" render --cluster eu-1 --name "$1" -f "$2" --out "$work/$1" >/dev/null
  terraform -chdir="$work/$1" init -input=false -no-color >/dev/null
}
show() { # name out
  terraform -chdir="$work/$1" show -json plan.tfplan | python3 "$here/trim.py" >"$here/$2"
}

# 1. Every module on: a first plan, everything created (≈50 resources).
render all-modules "$here/intents/all-modules.json"
terraform -chdir="$work/all-modules" plan -input=false -no-color -out=plan.tfplan >/dev/null
show all-modules plan-all-modules.json

# 2. A VPC applied, then its CIDR changed: the VPC and its subnets are replaced.
render vpc "$here/intents/vpc.json"
terraform -chdir="$work/vpc" apply -input=false -no-color -auto-approve >/dev/null
python3 - "$work/vpc/terraform.tfvars.json" <<'PY'
import json, sys
p = sys.argv[1]; v = json.load(open(p)); v["vpc_cidr"] = "10.99.0.0/16"; json.dump(v, open(p, "w"), indent=2)
PY
terraform -chdir="$work/vpc" plan -input=false -no-color -out=plan.tfplan >/dev/null
show vpc plan-vpc-replace.json

# 3. The same VPC destroyed.
terraform -chdir="$work/vpc" plan -destroy -input=false -no-color -out=plan.tfplan >/dev/null
show vpc plan-vpc-destroy.json
echo "fixtures written to $here"
