# A stand-in module for tests: terraform_data needs no provider.
resource "terraform_data" "zone" {
  input = {
    name = var.zone_name
    ttl  = var.ttl
    tags = var.tags
  }
}
