package grape.defaults.rds_test

import data.grape.defaults.rds

db(after) := {"resource_changes": [{
	"address": "module.rds[0].aws_db_instance.this",
	"mode": "managed",
	"type": "aws_db_instance",
	"change": {"actions": ["create"], "after": after, "after_unknown": {}},
}]}

private_encrypted := {"publicly_accessible": false, "storage_encrypted": true}

test_private_encrypted_instance_passes if {
	count(rds.deny_public) == 0 with input as db(private_encrypted)
	count(rds.deny_unencrypted) == 0 with input as db(private_encrypted)
}

test_public_instance_denied if {
	msgs := rds.deny_public with input as db(object.union(private_encrypted, {"publicly_accessible": true}))
	msgs == {"module.rds[0].aws_db_instance.this is publicly accessible: set publicly_accessible = false and reach the database from inside the VPC"}
}

test_public_cluster_instance_denied if {
	plan_input := {"resource_changes": [{
		"address": "aws_rds_cluster_instance.a",
		"mode": "managed",
		"type": "aws_rds_cluster_instance",
		"change": {"actions": ["update"], "after": {"publicly_accessible": true}},
	}]}
	count(rds.deny_public) == 1 with input as plan_input
}

test_unencrypted_instance_denied if {
	count(rds.deny_unencrypted) == 1 with input as db({"publicly_accessible": false, "storage_encrypted": false})
}

test_encryption_left_out_is_denied if {
	# Omitted in the configuration, storage_encrypted plans as unknown (and
	# AWS's default is unencrypted).
	plan_input := {"resource_changes": [{
		"address": "aws_db_instance.x",
		"mode": "managed",
		"type": "aws_db_instance",
		"change": {"actions": ["create"], "after": {"publicly_accessible": false}, "after_unknown": {"storage_encrypted": true}},
	}]}
	count(rds.deny_unencrypted) == 1 with input as plan_input
}

test_replica_inherits_encryption if {
	count(rds.deny_unencrypted) == 0 with input as db({"storage_encrypted": false, "replicate_source_db": "orders"})
}

test_unencrypted_aurora_cluster_denied if {
	plan_input := {"resource_changes": [{
		"address": "aws_rds_cluster.a",
		"mode": "managed",
		"type": "aws_rds_cluster",
		"change": {"actions": ["create"], "after": {"storage_encrypted": null}},
	}]}
	count(rds.deny_unencrypted) == 1 with input as plan_input
}

test_deleting_a_public_instance_is_not_judged if {
	plan_input := {"resource_changes": [{
		"address": "aws_db_instance.old",
		"mode": "managed",
		"type": "aws_db_instance",
		"change": {"actions": ["delete"], "before": {"publicly_accessible": true}, "after": null},
	}]}
	count(rds.deny_public) == 0 with input as plan_input
	count(rds.deny_unencrypted) == 0 with input as plan_input
}
