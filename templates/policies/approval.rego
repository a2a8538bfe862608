# Deleting or replacing a database, a Kubernetes cluster or a VPC loses data
# or takes everything in it down: a person approves it (a warning sends the
# deployment to awaiting_approval, whatever the config says).
package grape.defaults.approval

import data.grape.defaults.lib

protected := {"aws_db_instance", "aws_eks_cluster", "aws_vpc"}

warn_protected_delete contains msg if {
	some rc in input.resource_changes
	rc.type in protected
	rc.mode == "managed"
	lib.deletes(rc.change.actions)
	msg := sprintf("%s will be %s: approve only if losing it (and everything in it) is intended", [rc.address, verb(rc.change.actions)])
}

verb(actions) := "replaced (destroyed and created again)" if lib.replaces(actions)

verb(actions) := "destroyed" if not lib.replaces(actions)
