// Command grape is the Grape agent and CLI: one static binary that runs the
// pull loop inside a customer's network (`grape agent`) and lets people queue
// and follow deployments (`grape deploy`, `grape logs`, ...).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(mainCode())
}

// mainCode is main without os.Exit, so its deferred calls run.
func mainCode() int {
	// Commands that run long (agent, dev, serve) install their own two-stage
	// signal handling; for the rest, Ctrl-C cancels the context.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], &cmdIO{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv})
}
