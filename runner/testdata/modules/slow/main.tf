# An apply that takes 30 s. The shell runs sleep as a child (two commands),
# so when terraform stops the provisioner it kills the shell and leaves the
# sleep behind in terraform's process group: what the runner must clean up.
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sleep 30; echo done"
  }
}
