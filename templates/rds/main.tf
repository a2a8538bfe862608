locals {
  major_version = split(".", var.engine_version)[0]
}

resource "aws_db_subnet_group" "this" {
  name       = var.identifier
  subnet_ids = var.subnet_ids

  tags = merge(var.tags, { Name = var.identifier })
}

# Only PostgreSQL in, from the listed CIDR blocks and security groups; the
# group has no egress rules because a database never opens connections.
resource "aws_security_group" "this" {
  name        = "${var.identifier}-rds"
  description = "PostgreSQL access to ${var.identifier}"
  vpc_id      = var.vpc_id

  dynamic "ingress" {
    for_each = length(var.allowed_cidr_blocks) > 0 ? [var.allowed_cidr_blocks] : []
    content {
      description = "PostgreSQL from allowed networks"
      protocol    = "tcp"
      from_port   = var.port
      to_port     = var.port
      cidr_blocks = ingress.value
    }
  }

  dynamic "ingress" {
    for_each = length(var.allowed_security_group_ids) > 0 ? [var.allowed_security_group_ids] : []
    content {
      description     = "PostgreSQL from allowed security groups"
      protocol        = "tcp"
      from_port       = var.port
      to_port         = var.port
      security_groups = ingress.value
    }
  }

  tags = merge(var.tags, { Name = "${var.identifier}-rds" })
}

resource "aws_db_parameter_group" "this" {
  count = length(var.parameters) > 0 ? 1 : 0

  name   = "${var.identifier}-pg${local.major_version}"
  family = "postgres${local.major_version}"

  dynamic "parameter" {
    for_each = var.parameters
    content {
      name  = parameter.key
      value = parameter.value
      # Static parameters only take effect after a reboot, which RDS does in
      # the maintenance window; dynamic ones would also accept "immediate".
      apply_method = "pending-reboot"
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "this" {
  identifier     = var.identifier
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  allocated_storage     = var.allocated_storage
  max_allocated_storage = var.max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true

  db_name  = var.db_name
  username = var.master_username
  # Without a password from the agent's environment, RDS generates one and
  # keeps it in Secrets Manager: the secret never passes through Terraform.
  manage_master_user_password = var.master_password == null ? true : null
  password                    = var.master_password

  port                   = var.port
  multi_az               = var.multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.this.id]
  publicly_accessible    = false
  parameter_group_name   = length(var.parameters) > 0 ? aws_db_parameter_group.this[0].name : null

  backup_retention_period    = var.backup_retention_period
  copy_tags_to_snapshot      = true
  auto_minor_version_upgrade = true
  deletion_protection        = var.deletion_protection
  skip_final_snapshot        = var.skip_final_snapshot
  final_snapshot_identifier  = var.skip_final_snapshot ? null : "${var.identifier}-final"

  tags = var.tags
}
