output "id" {
  description = "The resource's id."
  value       = terraform_data.this.id
}
