# Every resource that takes tags carries the intent's tags: its top-level
# tags, its module's own tags, and Grape's (grape:cluster, grape:config,
# grape:environment). Cost reports, ownership and Grape's own lookups depend
# on them, so a missing tag is a deny, as in a conftest tagging policy: it
# fires only when a template forgets to pass its tags input on, which is a
# template bug to fix rather than a run to approve.
package grape.defaults.tags

import data.grape.defaults.lib

deny_missing_tags contains msg if {
	some i, tags in planned_tags
	rc := input.resource_changes[i]
	missing := [k | some k, v in required(object.get(rc, "module_address", "")); object.get(tags, k, null) != v]
	count(missing) > 0
	msg := sprintf("%s lacks the intent's tags %s: pass the module's tags input on to this resource", [rc.address, concat(", ", missing)])
}

# planned_tags[i] are the tags resource change i will carry, for the managed
# resources the plan creates or updates. (An object comprehension, not a
# partial rule: OPA checks each key of a partial object against every other,
# which is quadratic in a plan of a thousand resources.)
planned_tags := {i: tags |
	some i, rc in input.resource_changes
	rc.mode == "managed"
	lib.creates_or_updates(rc.change.actions)
	tags := known_tags(rc.change.after)
}

# tags_all (tags plus the provider's default_tags), which every taggable AWS
# resource has; else tags, for the few that only have that, or while
# tags_all is unknown. A resource with neither takes no tags: undefined, as
# are tags known only after apply (plan JSON leaves unknown values out of
# after).
known_tags(after) := object_or_empty(after.tags_all) if {
	_ = after.tags_all
} else := object_or_empty(after.tags) if {
	_ = after.tags
}

object_or_empty(x) := x if is_object(x)

object_or_empty(x) := {} if not is_object(x)

# What a resource at module_address must carry: the intent's tags, its
# module's tags (module.<name>[0] gets intent.modules.<name>.tags) and
# Grape's own. One evaluation per module, not per resource.
required(module_address) := object.union_n([intent_tags, module_tags(module_address), grape_tags])

intent_tags := object_or_empty(object.get(input, ["grape", "intent", "tags"], {}))

module_tags(module_address) := tags if {
	[_, name] := regex.find_all_string_submatch_n(`^module\.([A-Za-z0-9_-]+)`, module_address, 1)[0]
	tags := object_or_empty(object.get(input, ["grape", "intent", "modules", name, "tags"], {}))
} else := {}

# Grape's own tags, from what the agent knows of the deployment; empty when
# the plan is judged without it (grape policy eval without --cluster).
grape_tags := object.union(deployment_tags, environment_tag)

deployment_tags := {k: v |
	some k, field in {"grape:cluster": "cluster", "grape:config": "config"}
	v := object.get(input, ["grape", field], "")
	v != ""
}

environment_tag := {"grape:environment": env} if {
	env := object.get(input, ["grape", "intent", "environment"], "")
	env != ""
} else := {}
