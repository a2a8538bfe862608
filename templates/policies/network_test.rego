package grape.defaults.network_test

import data.grape.defaults.network

change(type, after) := {"resource_changes": [{
	"address": sprintf("%s.x", [type]),
	"mode": "managed",
	"type": type,
	"change": {"actions": ["create"], "after": after},
}]}

sg(ingress) := change("aws_security_group", {"ingress": ingress})

rule(protocol, from, to, cidrs, v6) := {
	"protocol": protocol, "from_port": from, "to_port": to,
	"cidr_blocks": cidrs, "ipv6_cidr_blocks": v6,
}

test_ssh_from_anywhere_inline_denied if {
	msgs := network.deny_admin_port_open with input as sg([rule("tcp", 22, 22, ["0.0.0.0/0"], [])])
	msgs == {"aws_security_group.x admits SSH (port 22) from 0.0.0.0/0: allow only known networks, or reach hosts through SSM Session Manager or a bastion"}
}

test_rdp_from_ipv6_anywhere_denied if {
	count(network.deny_admin_port_open) == 1 with input as sg([rule("tcp", 3389, 3389, null, ["::/0"])])
}

test_port_range_covering_ssh_denied if {
	count(network.deny_admin_port_open) == 1 with input as sg([rule("tcp", 0, 1024, ["0.0.0.0/0"], [])])
}

test_all_protocols_open_both_ports if {
	# protocol -1 admits every port whatever from/to say (AWS sets them to 0).
	count(network.deny_admin_port_open) == 2 with input as sg([rule("-1", 0, 0, ["0.0.0.0/0"], [])])
}

test_rdp_over_udp_denied_ssh_over_udp_not if {
	msgs := network.deny_admin_port_open with input as sg([rule("udp", 0, 65535, ["0.0.0.0/0"], [])])
	count(msgs) == 1
	some msg in msgs
	contains(msg, "RDP")
}

test_ssh_from_a_private_network_passes if {
	count(network.deny_admin_port_open) == 0 with input as sg([rule("tcp", 22, 22, ["10.0.0.0/8"], [])])
}

test_https_from_anywhere_passes if {
	count(network.deny_admin_port_open) == 0 with input as sg([rule("tcp", 443, 443, ["0.0.0.0/0"], ["::/0"])])
}

test_security_group_rule_ingress_denied if {
	plan_input := change("aws_security_group_rule", {
		"type": "ingress", "protocol": "tcp", "from_port": 22, "to_port": 22,
		"cidr_blocks": ["0.0.0.0/0"], "ipv6_cidr_blocks": null,
	})
	count(network.deny_admin_port_open) == 1 with input as plan_input
}

test_security_group_rule_egress_passes if {
	plan_input := change("aws_security_group_rule", {
		"type": "egress", "protocol": "-1", "from_port": 0, "to_port": 0,
		"cidr_blocks": ["0.0.0.0/0"],
	})
	count(network.deny_admin_port_open) == 0 with input as plan_input
}

test_vpc_ingress_rule_denied if {
	plan_input := change("aws_vpc_security_group_ingress_rule", {
		"ip_protocol": "tcp", "from_port": 3389, "to_port": 3389, "cidr_ipv4": "0.0.0.0/0", "cidr_ipv6": null,
	})
	count(network.deny_admin_port_open) == 1 with input as plan_input
}

test_vpc_ingress_rule_all_traffic_ipv6_denied if {
	plan_input := change("aws_vpc_security_group_ingress_rule", {
		"ip_protocol": "-1", "from_port": null, "to_port": null, "cidr_ipv4": null, "cidr_ipv6": "::/0",
	})
	count(network.deny_admin_port_open) == 2 with input as plan_input
}

test_vpc_ingress_rule_from_a_security_group_passes if {
	plan_input := change("aws_vpc_security_group_ingress_rule", {
		"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv4": null, "referenced_security_group_id": "sg-1",
	})
	count(network.deny_admin_port_open) == 0 with input as plan_input
}
