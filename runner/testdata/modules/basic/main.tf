# Root module made only of terraform_data (built into terraform: no provider
# to install, plans in milliseconds).

variable "greeting" {
  type    = string
  default = "hello"
}

variable "secret" {
  type      = string
  default   = "s3cr3t-value-never-logged"
  sensitive = true
}

resource "terraform_data" "greeting" {
  input = var.greeting
}

# Replaced whenever the greeting changes.
resource "terraform_data" "pinned" {
  input            = "pinned"
  triggers_replace = [var.greeting]
}

resource "terraform_data" "secret" {
  input = var.secret
}

output "greeting" {
  value = terraform_data.greeting.output
}

output "secret" {
  value     = var.secret
  sensitive = true
}
