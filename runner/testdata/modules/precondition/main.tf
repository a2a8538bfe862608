variable "ok" {
  type    = bool
  default = false
}

resource "terraform_data" "checked" {
  input = "x"

  lifecycle {
    precondition {
      condition     = var.ok
      error_message = "The ok variable must be true."
    }
  }
}
