// Package e2e tests Grape end to end with real parts only: the grape binary
// running as an agent process, PostgreSQL, a git server on loopback, and
// terraform with the AWS provider against moto. The tests are in _test files.
package e2e
