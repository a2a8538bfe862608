resource "terraform_data" "this" {
  input = {
    value = var.value
    tags  = var.tags
  }
}
