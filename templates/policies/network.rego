# No security group admits SSH (22) or RDP (3389) from the whole internet.
package grape.defaults.network

import data.grape.defaults.lib

admin_ports := {22: "SSH", 3389: "RDP"}

anywhere := {"0.0.0.0/0", "::/0"}

# Inline ingress blocks of aws_security_group.
deny_admin_port_open contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_security_group"
	rc.mode == "managed"
	lib.creates_or_updates(rc.change.actions)
	some rule in lib.list(object.get(rc.change.after, "ingress", []))
	some cidr in cidrs(rule)
	cidr in anywhere
	some port, name in admin_ports
	admits(rule.protocol, rule.from_port, rule.to_port, port)
	msg := open_message(rc.address, name, port, cidr)
}

# aws_security_group_rule of type ingress.
deny_admin_port_open contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_security_group_rule"
	rc.mode == "managed"
	lib.creates_or_updates(rc.change.actions)
	rc.change.after.type == "ingress"
	after := rc.change.after
	some cidr in cidrs(after)
	cidr in anywhere
	some port, name in admin_ports
	admits(after.protocol, after.from_port, after.to_port, port)
	msg := open_message(rc.address, name, port, cidr)
}

# aws_vpc_security_group_ingress_rule: one source per rule; with ip_protocol
# "-1" the ports are null and every port is open.
deny_admin_port_open contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_vpc_security_group_ingress_rule"
	rc.mode == "managed"
	lib.creates_or_updates(rc.change.actions)
	after := rc.change.after
	some attr in ["cidr_ipv4", "cidr_ipv6"]
	cidr := object.get(after, attr, null)
	cidr in anywhere
	some port, name in admin_ports
	admits(after.ip_protocol, after.from_port, after.to_port, port)
	msg := open_message(rc.address, name, port, cidr)
}

# The IPv4 and IPv6 sources of an inline rule or an aws_security_group_rule.
cidrs(rule) := array.concat(
	lib.list(object.get(rule, "cidr_blocks", [])),
	lib.list(object.get(rule, "ipv6_cidr_blocks", [])),
)

open_message(address, name, port, cidr) := sprintf(
	"%s admits %s (port %d) from %s: allow only known networks, or reach hosts through SSM Session Manager or a bastion",
	[address, name, port, cidr],
)

# All protocols: every port, whatever the port fields say.
admits(protocol, _, _, _) if lower(sprintf("%v", [protocol])) in {"-1", "all"}

# TCP (SSH and RDP) and UDP (RDP also listens on UDP 3389).
admits(protocol, from, to, port) if {
	lower(sprintf("%v", [protocol])) in transport_protocols[port]
	is_number(from)
	is_number(to)
	from <= port
	port <= to
}

transport_protocols := {
	22: {"tcp", "6"},
	3389: {"tcp", "6", "udp", "17"},
}
