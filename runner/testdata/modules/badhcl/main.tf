resource "terraform_data" "unclosed" {
  input = "x"
