output "controller_role_arn" {
  description = "ARN of the controller IAM role (annotate or associate the Karpenter service account with it)."
  value       = aws_iam_role.controller.arn
}

output "controller_role_name" {
  description = "Name of the controller IAM role."
  value       = aws_iam_role.controller.name
}

output "node_role_arn" {
  description = "ARN of the IAM role of nodes Karpenter launches."
  value       = aws_iam_role.node.arn
}

output "node_role_name" {
  description = "Name of the node IAM role (EC2NodeClass spec.role)."
  value       = aws_iam_role.node.name
}

output "instance_profile_name" {
  description = "Name of the node instance profile."
  value       = aws_iam_instance_profile.node.name
}

output "queue_name" {
  description = "Name of the interruption queue (Helm value settings.interruptionQueue), null when interruption handling is off."
  value       = try(aws_sqs_queue.interruption[0].name, null)
}

output "queue_arn" {
  description = "ARN of the interruption queue, null when interruption handling is off."
  value       = try(aws_sqs_queue.interruption[0].arn, null)
}

output "event_rule_names" {
  description = "Names of the EventBridge rules feeding the interruption queue."
  value       = [for k in sort(keys(aws_cloudwatch_event_rule.interruption)) : aws_cloudwatch_event_rule.interruption[k].name]
}
