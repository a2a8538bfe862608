# RDS databases are private and encrypted at rest.
package grape.defaults.rds

import data.grape.defaults.lib

# An instance reachable from the internet is one leaked password away from
# a breach; databases are reached from inside the VPC.
deny_public contains msg if {
	some rc in input.resource_changes
	rc.type in {"aws_db_instance", "aws_rds_cluster_instance"}
	rc.mode == "managed"
	lib.creates_or_updates(rc.change.actions)
	rc.change.after.publicly_accessible == true
	msg := sprintf("%s is publicly accessible: set publicly_accessible = false and reach the database from inside the VPC", [rc.address])
}

# storage_encrypted must be true. Left out, it plans as unknown and AWS
# creates an unencrypted volume, so unknown is denied too. Replicas and
# restores from a snapshot inherit their source's encryption and are exempt.
deny_unencrypted contains msg if {
	some rc in input.resource_changes
	rc.type in {"aws_db_instance", "aws_rds_cluster"}
	rc.mode == "managed"
	lib.creates_or_updates(rc.change.actions)
	not rc.change.after.storage_encrypted == true
	not inherits_encryption(rc.change)
	msg := sprintf("%s stores data unencrypted: set storage_encrypted = true (encryption cannot be turned on later without a new instance)", [rc.address])
}

sources := {"replicate_source_db", "replication_source_identifier", "snapshot_identifier"}

inherits_encryption(change) if {
	some attr in sources
	not change.after[attr] in {null, ""}
}

inherits_encryption(change) if {
	some attr in sources
	change.after_unknown[attr] == true
}
