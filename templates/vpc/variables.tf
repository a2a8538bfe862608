variable "name" {
  type        = string
  default     = "grape"
  description = "Name prefix for the VPC and everything in it (Name tags)."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,47}$", var.name))
    error_message = "name must be 1-48 letters, digits or hyphens, starting with a letter or digit."
  }
}

# grape:stack-identity a new CIDR replaces the VPC and everything in it
variable "cidr" {
  type        = string
  default     = "10.0.0.0/16"
  description = "IPv4 CIDR block of the VPC, /16 to /24. Subnets are carved from it unless given explicitly."

  validation {
    condition     = can(cidrnetmask(var.cidr)) && can(regex("^[0-9.]+/(1[6-9]|2[0-4])$", var.cidr))
    error_message = "cidr must be an IPv4 CIDR block from /16 to /24, such as \"10.0.0.0/16\"."
  }

  validation {
    condition     = try(cidrsubnet(var.cidr, 0, 0) == var.cidr, true)
    error_message = "cidr must start at its network address (for example \"10.0.0.0/16\", not \"10.0.0.1/16\")."
  }
}

variable "az_count" {
  type        = number
  default     = 2
  description = "Number of availability zones to spread the subnets over (1-6). EKS needs at least 2."

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number from 1 to 6."
  }
}

variable "availability_zones" {
  type        = list(string)
  default     = []
  description = "Availability zone names to use, az_count of them. Empty: the first az_count zones of the region that need no opt-in."

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == var.az_count
    error_message = "availability_zones must be empty or list exactly az_count zones."
  }

  validation {
    condition     = length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must not repeat a zone."
  }
}

variable "public_subnet_cidrs" {
  type        = list(string)
  default     = []
  description = "CIDR blocks of the public subnets, one per zone. Empty: cidrsubnet(cidr, 4, 8 + i) for zone i."

  validation {
    condition     = length(var.public_subnet_cidrs) == 0 || length(var.public_subnet_cidrs) == var.az_count
    error_message = "public_subnet_cidrs must be empty or list exactly az_count CIDR blocks."
  }

  validation {
    condition     = alltrue([for c in var.public_subnet_cidrs : can(cidrnetmask(c))])
    error_message = "public_subnet_cidrs must hold IPv4 CIDR blocks such as \"10.0.128.0/20\"."
  }
}

variable "private_subnet_cidrs" {
  type        = list(string)
  default     = []
  description = "CIDR blocks of the private subnets, one per zone. Empty: cidrsubnet(cidr, 4, i) for zone i."

  validation {
    condition     = length(var.private_subnet_cidrs) == 0 || length(var.private_subnet_cidrs) == var.az_count
    error_message = "private_subnet_cidrs must be empty or list exactly az_count CIDR blocks."
  }

  validation {
    condition     = alltrue([for c in var.private_subnet_cidrs : can(cidrnetmask(c))])
    error_message = "private_subnet_cidrs must hold IPv4 CIDR blocks such as \"10.0.0.0/20\"."
  }
}

variable "nat_gateway" {
  type        = string
  default     = "single"
  description = "NAT for the private subnets: \"single\" (one gateway, cheapest), \"per_az\" (one per zone, survives a zone outage) or \"none\" (no outbound internet)."

  validation {
    condition     = contains(["single", "per_az", "none"], var.nat_gateway)
    error_message = "nat_gateway must be \"single\", \"per_az\" or \"none\"."
  }
}

variable "map_public_ip_on_launch" {
  type        = bool
  default     = false
  description = "Give instances launched in the public subnets a public IPv4 address."
}

variable "public_subnet_tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for the public subnets (kubernetes.io/role/elb = 1 is always set)."
}

variable "private_subnet_tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for the private subnets (kubernetes.io/role/internal-elb = 1 is always set)."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags for every resource."
}
