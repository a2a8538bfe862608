package grape.defaults.tags_test

import data.grape.defaults.tags

grape := {
	"cluster": "eu-1",
	"config": "prod",
	"intent": {
		"environment": "production",
		"tags": {"team": "platform"},
		"modules": {"rds": {"tags": {"data": "orders"}}},
	},
}

all_tags := {
	"team": "platform", "grape:cluster": "eu-1", "grape:config": "prod",
	"grape:environment": "production",
}

resource(module, after, unknown) := {
	"address": sprintf("module.%s[0].aws_x.this", [module]),
	"module_address": sprintf("module.%s[0]", [module]),
	"mode": "managed",
	"type": "aws_x",
	"change": {"actions": ["create"], "after": after, "after_unknown": unknown},
}

plan(rc) := {"resource_changes": [rc], "grape": grape}

test_fully_tagged_resource_passes if {
	count(tags.deny_missing_tags) == 0 with input as plan(resource("vpc", {"tags_all": all_tags}, {}))
}

test_missing_intent_tag_denied if {
	after := {"tags_all": object.remove(all_tags, ["team"])}
	msgs := tags.deny_missing_tags with input as plan(resource("vpc", after, {}))
	msgs == {"module.vpc[0].aws_x.this lacks the intent's tags team: pass the module's tags input on to this resource"}
}

test_wrong_value_counts_as_missing if {
	after := {"tags_all": object.union(all_tags, {"grape:cluster": "other"})}
	count(tags.deny_missing_tags) == 1 with input as plan(resource("vpc", after, {}))
}

test_module_tags_are_required_in_their_module_only if {
	msgs := tags.deny_missing_tags with input as plan(resource("rds", {"tags_all": all_tags}, {}))
	msgs == {"module.rds[0].aws_x.this lacks the intent's tags data: pass the module's tags input on to this resource"}
	count(tags.deny_missing_tags) == 0 with input as plan(resource("rds", {"tags_all": object.union(all_tags, {"data": "orders"})}, {}))
}

test_untagged_resource_without_tags_attribute_passes if {
	count(tags.deny_missing_tags) == 0 with input as plan(resource("vpc", {"route_table_id": "rtb-1"}, {}))
}

test_null_tags_denied if {
	# tags = null in the configuration: the provider plans tags_all = {}.
	msgs := tags.deny_missing_tags with input as plan(resource("vpc", {"tags": null, "tags_all": {}}, {}))
	count(msgs) == 1
	some msg in msgs
	contains(msg, "grape:cluster, grape:config, grape:environment, team")
}

test_unknown_tags_all_falls_back_to_tags if {
	count(tags.deny_missing_tags) == 0 with input as plan(resource("vpc", {"tags": all_tags}, {"tags_all": true}))
	count(tags.deny_missing_tags) == 1 with input as plan(resource("vpc", {"tags": {}}, {"tags_all": true}))
}

test_tags_known_only_after_apply_are_not_judged if {
	count(tags.deny_missing_tags) == 0 with input as plan(resource("vpc", {}, {"tags": true, "tags_all": true}))
}

test_deletions_are_not_judged if {
	rc := object.union(resource("vpc", null, {}), {"change": {"actions": ["delete"], "before": {"tags_all": {}}, "after": null}})
	count(tags.deny_missing_tags) == 0 with input as plan(rc)
}

test_without_grape_input_only_present_tags_are_required if {
	# grape policy eval without --cluster/--config: nothing to require.
	plan_input := {"resource_changes": [resource("vpc", {"tags_all": {}}, {})]}
	count(tags.deny_missing_tags) == 0 with input as plan_input
}
