# Writes the environment terraform's children see, for the isolation test.
resource "terraform_data" "env" {
  provisioner "local-exec" {
    command = "env > env.txt"
  }
}
