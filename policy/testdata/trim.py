"""Trims `terraform show -json` output for a fixture: keeps what policies
read (resource_changes, planned_values, variables, output_changes, the
versions, and of the configuration only the root module's variable
declarations, which say which variables are sensitive) and drops the rest of
the configuration and the prior state, which are large, repeat the templates
and are not read by the default pack."""
import json
import sys

plan = json.load(sys.stdin)
keep = ["format_version", "terraform_version", "variables", "planned_values",
        "resource_changes", "output_changes", "applyable", "complete", "errored"]
out = {k: plan[k] for k in keep if k in plan}
root_vars = plan.get("configuration", {}).get("root_module", {}).get("variables")
if root_vars:
    out["configuration"] = {"root_module": {"variables": root_vars}}
json.dump(out, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
