variable "zone_name" {
  type        = string
  description = "DNS zone to create, such as \"internal.example.com\"."
}

variable "ttl" {
  type        = number
  default     = 300
  description = "Default TTL of the zone's records, in seconds."

  validation {
    condition     = var.ttl >= 60
    error_message = "ttl must be at least 60 seconds."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags for every resource."
}
