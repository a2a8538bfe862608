//go:build tools

package tools

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/go-git/go-git/v5"
	_ "github.com/hashicorp/hcl/v2"
	_ "github.com/hashicorp/terraform-exec/tfexec"
	_ "github.com/hashicorp/terraform-json"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/robfig/cron/v3"
	_ "github.com/stretchr/testify/require"
	_ "github.com/zclconf/go-cty/cty"
	_ "go.uber.org/goleak"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/term"
)
