variable "value" {
  type        = string
  default     = "v1"
  description = "A value kept in the resource."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags, kept in the resource."
}
