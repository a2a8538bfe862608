output "zone_name" {
  description = "Name of the zone."
  value       = terraform_data.zone.output.name
}
