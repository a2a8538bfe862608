# grape:stack-identity renames the DB instance, so every client's endpoint changes, and replaces its subnet group, which RDS refuses while the instance uses it
variable "identifier" {
  type        = string
  default     = "grape"
  description = "Identifier of the DB instance (unique per account and region); also names its subnet and security groups."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,50}$", var.identifier)) && !can(regex("--|-$", var.identifier))
    error_message = "identifier must be 1-51 lowercase letters, digits or hyphens, start with a letter, and have no double or trailing hyphen."
  }
}

variable "engine_version" {
  type        = string
  default     = "16"
  description = "PostgreSQL version: a major version (\"16\", minor upgrades applied automatically) or an exact one (\"16.4\")."

  validation {
    condition     = can(regex("^[0-9]{2}(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL version such as \"16\" or \"16.4\"."
  }
}

variable "instance_class" {
  type        = string
  default     = "db.t4g.micro"
  description = "DB instance class, such as \"db.t4g.micro\" or \"db.r6g.large\"."

  validation {
    condition     = can(regex("^db\\.[a-z0-9-]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "instance_class must be an RDS instance class such as \"db.t4g.micro\"."
  }
}

variable "allocated_storage" {
  type        = number
  default     = 20
  description = "Initial storage in GiB (20-65536)."

  validation {
    condition     = var.allocated_storage >= 20 && var.allocated_storage <= 65536 && floor(var.allocated_storage) == var.allocated_storage
    error_message = "allocated_storage must be a whole number of GiB from 20 to 65536."
  }
}

variable "max_allocated_storage" {
  type        = number
  default     = 100
  description = "Upper limit in GiB for storage autoscaling; 0 turns autoscaling off."

  validation {
    condition     = var.max_allocated_storage == 0 || (var.max_allocated_storage >= var.allocated_storage && var.max_allocated_storage <= 65536)
    error_message = "max_allocated_storage must be 0 (no autoscaling) or from allocated_storage to 65536."
  }
}

variable "db_name" {
  type        = string
  default     = "app"
  description = "Name of the database created in the instance."

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must be 1-63 letters, digits or underscores, starting with a letter."
  }
}

variable "master_username" {
  type        = string
  default     = "grape_admin"
  description = "Master user name."

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_]{0,62}$", var.master_username)) && !contains(["postgres", "rdsadmin", "admin"], lower(var.master_username))
    error_message = "master_username must be 1-63 letters, digits or underscores, start with a letter, and not be a reserved name (postgres, rdsadmin, admin)."
  }
}

variable "master_password" {
  type        = string
  default     = null
  sensitive   = true
  description = "Master password. Leave unset so RDS generates it and keeps it in AWS Secrets Manager (recommended); set it only from the agent's environment, never in the intent."

  validation {
    condition     = var.master_password == null || try(length(var.master_password) >= 8 && length(var.master_password) <= 128 && !can(regex("[/\"@ ]", var.master_password)), false)
    error_message = "master_password must be 8-128 characters without /, \", @ or spaces."
  }
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets for the DB subnet group, in at least two zones. Grape wires the VPC module's private subnets when it is on."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must list at least two subnets in different availability zones (an RDS subnet group needs two zones)."
  }
}

variable "vpc_id" {
  type        = string
  description = "VPC of the security group. Grape wires the VPC module's VPC when it is on."
}

variable "allowed_cidr_blocks" {
  type        = list(string)
  default     = []
  description = "IPv4 CIDR blocks allowed to connect. Grape wires the VPC's own CIDR when the VPC module is on, which admits EKS nodes and pods in it."

  validation {
    condition     = alltrue([for c in var.allowed_cidr_blocks : can(cidrnetmask(c))])
    error_message = "allowed_cidr_blocks must hold IPv4 CIDR blocks such as \"10.0.0.0/16\"."
  }
}

variable "allowed_security_group_ids" {
  type        = list(string)
  default     = []
  description = "Security groups allowed to connect (for example an EKS cluster security group outside this VPC's CIDR rules)."
}

variable "port" {
  type        = number
  default     = 5432
  description = "TCP port PostgreSQL listens on."

  validation {
    condition     = var.port >= 1150 && var.port <= 65535 && floor(var.port) == var.port
    error_message = "port must be a whole number from 1150 to 65535, as RDS requires."
  }
}

variable "multi_az" {
  type        = bool
  default     = false
  description = "Run a synchronous standby in a second zone (doubles the instance cost)."
}

variable "backup_retention_period" {
  type        = number
  default     = 7
  description = "Days automated backups are kept (0-35; 0 turns backups off)."

  validation {
    condition     = var.backup_retention_period >= 0 && var.backup_retention_period <= 35 && floor(var.backup_retention_period) == var.backup_retention_period
    error_message = "backup_retention_period must be a whole number of days from 0 to 35."
  }
}

variable "deletion_protection" {
  type        = bool
  default     = true
  description = "Refuse to delete the instance. Set false before disabling the module or destroying the config."
}

variable "skip_final_snapshot" {
  type        = bool
  default     = false
  description = "Delete without taking a final snapshot named \"<identifier>-final\"."
}

variable "parameters" {
  type        = map(string)
  default     = {}
  description = "PostgreSQL parameters; when any are given a parameter group \"<identifier>-pg<major>\" is created for them."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags for every resource."
}
