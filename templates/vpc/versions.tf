terraform {
  # 1.9 is the first release whose validation blocks may refer to other
  # variables, which several of these modules rely on.
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 6.0"
    }
  }
}
