package grape.defaults.approval_test

import data.grape.defaults.approval

plan(type, actions) := {"resource_changes": [{
	"address": sprintf("module.m[0].%s.this", [type]),
	"mode": "managed",
	"type": type,
	"change": {"actions": actions},
}]}

test_vpc_replacement_warns if {
	msgs := approval.warn_protected_delete with input as plan("aws_vpc", ["delete", "create"])
	msgs == {"module.m[0].aws_vpc.this will be replaced (destroyed and created again): approve only if losing it (and everything in it) is intended"}
}

test_create_before_destroy_replacement_warns if {
	count(approval.warn_protected_delete) == 1 with input as plan("aws_eks_cluster", ["create", "delete"])
}

test_database_deletion_warns if {
	msgs := approval.warn_protected_delete with input as plan("aws_db_instance", ["delete"])
	msgs == {"module.m[0].aws_db_instance.this will be destroyed: approve only if losing it (and everything in it) is intended"}
}

test_updates_and_creates_pass if {
	count(approval.warn_protected_delete) == 0 with input as plan("aws_vpc", ["update"])
	count(approval.warn_protected_delete) == 0 with input as plan("aws_db_instance", ["create"])
	count(approval.warn_protected_delete) == 0 with input as plan("aws_eks_cluster", ["no-op"])
}

test_other_types_pass if {
	count(approval.warn_protected_delete) == 0 with input as plan("aws_subnet", ["delete", "create"])
}
