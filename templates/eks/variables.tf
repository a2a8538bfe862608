# grape:stack-identity a new name replaces the EKS cluster, its IAM roles and node group; the workloads running in it are lost
variable "name" {
  type        = string
  default     = "grape"
  description = "Name of the EKS cluster (unique per account and region); also prefixes its IAM roles and node group."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,37}$", var.name))
    error_message = "name must be 1-38 letters, digits, hyphens or underscores, starting with a letter or digit (IAM role names built from it must stay under 64 characters)."
  }
}

variable "kubernetes_version" {
  type        = string
  default     = "1.32"
  description = "Kubernetes minor version of the control plane and nodes, such as \"1.32\"."

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version such as \"1.32\"."
  }
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets for the control plane ENIs and the nodes, in at least two zones. Grape wires the VPC module's private subnets when it is on."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must list at least two subnets in different availability zones (EKS requires two zones)."
  }
}

variable "endpoint_public_access" {
  type        = bool
  default     = true
  description = "Expose the Kubernetes API endpoint on the internet (limited to public_access_cidrs)."
}

variable "endpoint_private_access" {
  type        = bool
  default     = true
  description = "Expose the Kubernetes API endpoint inside the VPC."
}

variable "public_access_cidrs" {
  type        = list(string)
  default     = ["0.0.0.0/0"]
  description = "IPv4 CIDR blocks allowed to reach the public API endpoint."

  validation {
    condition     = length(var.public_access_cidrs) > 0 && alltrue([for c in var.public_access_cidrs : can(cidrnetmask(c))])
    error_message = "public_access_cidrs must list at least one IPv4 CIDR block such as \"203.0.113.0/24\"."
  }
}

variable "authentication_mode" {
  type        = string
  default     = "API_AND_CONFIG_MAP"
  description = "How IAM principals are mapped to Kubernetes: \"API\", \"API_AND_CONFIG_MAP\" or \"CONFIG_MAP\". Karpenter's access entry needs an API mode."

  validation {
    condition     = contains(["API", "API_AND_CONFIG_MAP", "CONFIG_MAP"], var.authentication_mode)
    error_message = "authentication_mode must be \"API\", \"API_AND_CONFIG_MAP\" or \"CONFIG_MAP\"."
  }
}

variable "enabled_log_types" {
  type        = list(string)
  default     = ["api", "audit", "authenticator"]
  description = "Control plane log types sent to CloudWatch Logs (api, audit, authenticator, controllerManager, scheduler)."

  validation {
    condition     = alltrue([for t in var.enabled_log_types : contains(["api", "audit", "authenticator", "controllerManager", "scheduler"], t)])
    error_message = "enabled_log_types may only hold \"api\", \"audit\", \"authenticator\", \"controllerManager\" and \"scheduler\"."
  }
}

variable "log_retention_days" {
  type        = number
  default     = 90
  description = "Days CloudWatch keeps the control plane logs."

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention period: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "node_instance_types" {
  type        = list(string)
  default     = ["t3.medium"]
  description = "EC2 instance types of the managed node group."

  validation {
    condition     = length(var.node_instance_types) > 0 && alltrue([for t in var.node_instance_types : can(regex("^[a-z0-9-]+\\.[a-z0-9-]+$", t))])
    error_message = "node_instance_types must list at least one EC2 instance type such as \"t3.medium\"."
  }
}

variable "node_capacity_type" {
  type        = string
  default     = "ON_DEMAND"
  description = "Capacity type of the managed node group: \"ON_DEMAND\" or \"SPOT\"."

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.node_capacity_type)
    error_message = "node_capacity_type must be \"ON_DEMAND\" or \"SPOT\"."
  }
}

variable "node_ami_type" {
  type        = string
  default     = "AL2023_x86_64_STANDARD"
  description = "AMI type of the managed node group, such as \"AL2023_x86_64_STANDARD\" or \"AL2023_ARM_64_STANDARD\"."
}

variable "node_disk_size" {
  type        = number
  default     = 50
  description = "Root volume size of each node, in GiB (20-16384)."

  validation {
    condition     = var.node_disk_size >= 20 && var.node_disk_size <= 16384 && floor(var.node_disk_size) == var.node_disk_size
    error_message = "node_disk_size must be a whole number of GiB from 20 to 16384."
  }
}

variable "node_min_size" {
  type        = number
  default     = 1
  description = "Minimum number of nodes in the managed node group."

  validation {
    condition     = var.node_min_size >= 0 && var.node_min_size <= 450 && floor(var.node_min_size) == var.node_min_size
    error_message = "node_min_size must be a whole number from 0 to 450."
  }
}

variable "node_desired_size" {
  type        = number
  default     = 2
  description = "Initial number of nodes. Later changes are left to autoscalers (Terraform ignores drift in it)."

  validation {
    condition     = var.node_desired_size >= var.node_min_size && var.node_desired_size <= var.node_max_size && floor(var.node_desired_size) == var.node_desired_size
    error_message = "node_desired_size must be a whole number from node_min_size to node_max_size."
  }
}

variable "node_max_size" {
  type        = number
  default     = 3
  description = "Maximum number of nodes in the managed node group (1-450)."

  validation {
    condition     = var.node_max_size >= 1 && var.node_max_size <= 450 && var.node_max_size >= var.node_min_size && floor(var.node_max_size) == var.node_max_size
    error_message = "node_max_size must be a whole number from 1 to 450 and at least node_min_size."
  }
}

variable "node_labels" {
  type        = map(string)
  default     = {}
  description = "Kubernetes labels for the managed nodes."
}

variable "addons" {
  type = map(object({
    addon_version               = optional(string)
    configuration_values        = optional(string)
    resolve_conflicts_on_create = optional(string, "OVERWRITE")
    resolve_conflicts_on_update = optional(string, "OVERWRITE")
  }))
  default     = {}
  description = "EKS add-ons to install, keyed by name (vpc-cni, coredns, kube-proxy, eks-pod-identity-agent, ...). None by default: EKS runs self-managed vpc-cni, coredns and kube-proxy until you list them."

  validation {
    condition     = alltrue([for k in keys(var.addons) : can(regex("^[a-z0-9][a-z0-9-]{0,99}$", k))])
    error_message = "addons keys must be add-on names such as \"coredns\"."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags for every resource."
}
