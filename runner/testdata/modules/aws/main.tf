# A small AWS module for the drift test against moto (the provider comes from
# the filesystem mirror; AWS_ENDPOINT_URL points it at moto).
terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

provider "aws" {
  region = "us-east-1"
}

resource "aws_vpc" "this" {
  cidr_block = "10.42.0.0/16"
  tags = {
    Name = "grape-drift"
  }
}

resource "aws_security_group" "web" {
  name   = "grape-web"
  vpc_id = aws_vpc.this.id
  tags = {
    Name = "grape-web"
  }
}

output "vpc_id" {
  value = aws_vpc.this.id
}
