variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster Karpenter provisions nodes for. Grape wires the EKS module's cluster when it is on."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be an EKS cluster name: letters, digits, hyphens and underscores, starting with a letter or digit."
  }
}

variable "namespace" {
  type        = string
  default     = "kube-system"
  description = "Kubernetes namespace the Karpenter controller runs in."
}

variable "service_account" {
  type        = string
  default     = "karpenter"
  description = "Kubernetes service account of the Karpenter controller."
}

variable "controller_role_name" {
  type        = string
  default     = null
  description = "Name of the controller IAM role. Null: \"KarpenterController-<cluster_name>\"."

  validation {
    condition     = var.controller_role_name == null || can(regex("^[\\w+=,.@-]{1,64}$", var.controller_role_name))
    error_message = "controller_role_name must be an IAM role name of at most 64 characters."
  }
}

variable "node_role_name" {
  type        = string
  default     = null
  description = "Name of the IAM role of the nodes Karpenter launches. Null: \"KarpenterNode-<cluster_name>\"."

  validation {
    condition     = var.node_role_name == null || can(regex("^[\\w+=,.@-]{1,64}$", var.node_role_name))
    error_message = "node_role_name must be an IAM role name of at most 64 characters."
  }
}

variable "node_role_additional_policies" {
  type        = map(string)
  default     = {}
  description = "Extra IAM policy ARNs to attach to the node role, keyed by a stable name."
}

variable "queue_name" {
  type        = string
  default     = null
  description = "Name of the interruption SQS queue. Null: \"Karpenter-<cluster_name>\"."
}

variable "enable_interruption_handling" {
  type        = bool
  default     = true
  description = "Create the interruption queue and the EventBridge rules feeding it (spot interruptions, rebalance recommendations, instance state changes, AWS Health events)."
}

variable "create_access_entry" {
  type        = bool
  default     = true
  description = "Create the EKS access entry that lets nodes with the node role join the cluster (needs an API authentication mode)."
}

variable "create_pod_identity_association" {
  type        = bool
  default     = false
  description = "Associate the controller role with the service account through EKS Pod Identity (needs the eks-pod-identity-agent add-on)."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags for every resource."
}
