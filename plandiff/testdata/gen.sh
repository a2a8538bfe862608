#!/usr/bin/env bash
# Regenerates the plan JSONs under plans/ with real terraform (1.11.4) and,
# for the aws ones, hashicorp/aws 5.100.0 from /opt/tf-plugins against moto.
# Each file is `terraform show -json` of a saved plan, unedited. The CANARY
# strings are test passwords: the tests assert they never reach any output.
# Usage: plandiff/testdata/gen.sh   (then: go test ./plandiff -update)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$here/plans
mkdir -p "$out"
work=$(mktemp -d)
moto_pid=""
cleanup() { [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cat >"$work/tfrc" <<RC
provider_installation {
  filesystem_mirror { path = "/opt/tf-plugins" }
}
RC
export TF_CLI_CONFIG_FILE=$work/tfrc TF_IN_AUTOMATION=1
tf() { terraform "$1" -no-color -input=false "${@:2}" >/dev/null; }
show() { terraform show -json p.tfplan | python3 -m json.tool --indent 1 >"$out/$1.json"; }

# terraform_data: create, no-op, update of every kind, destroy.
mkdir "$work/tfdata" && cd "$work/tfdata"
cp "$here/fixtures/tfdata/v1/main.tf" .
terraform init -no-color -input=false >/dev/null
export TF_VAR_password=CANARY-tfdata-one
tf plan -out=p.tfplan && show tfdata_create && tf apply p.tfplan
tf plan -out=p.tfplan && show tfdata_noop
cp "$here/fixtures/tfdata/v2/main.tf" .
export TF_VAR_password=CANARY-tfdata-two
tf plan -out=p.tfplan && show tfdata_update
tf plan -destroy -out=p.tfplan && show tfdata_destroy

# AWS on moto.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO_IAM_LOAD_MANAGED_POLICIES=true moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
for _ in $(seq 100); do curl -fs "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done

mkdir "$work/aws" && cd "$work/aws"
cp "$here/fixtures/aws/v1/main.tf" .
terraform init -no-color -input=false >/dev/null
export TF_VAR_db_password=CANARY-aws-one
tf plan -out=p.tfplan && show aws_create && tf apply p.tfplan
tf plan -out=p.tfplan && show aws_noop
vpc=$(terraform state show -no-color aws_vpc.this | awk '$1=="id"{gsub(/"/,"",$3); print $3}')
aws ec2 create-tags --resources "$vpc" --tags Key=team,Value=red Key=edited-by,Value=console >/dev/null
tf plan -out=p.tfplan && show aws_drift
export TF_VAR_db_password=CANARY-aws-two
tf plan -out=p.tfplan -var subnets=2 -var team=green -var port=8080 && show aws_update

# The vpc template of the templates set, planned from scratch (the
# benchmark's "real VPC plan").
mkdir "$work/vpc" && cd "$work/vpc"
cp -r "$repo/templates/vpc" vpc
cat >main.tf <<TF
provider "aws" {
  region = "us-east-1"
}
module "vpc" {
  source = "./vpc"
  availability_zones = ["us-east-1a", "us-east-1b"]
}
TF
terraform init -no-color -input=false >/dev/null
tf plan -out=p.tfplan && show vpc_create
echo "wrote $(ls "$out" | wc -l) plans to $out"
