# Grape — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS := ./...
# The test run starts its own throwaway PostgreSQL, moto and git servers.
TEST_TIMEOUT ?= 45m
# Most of the suite's CPU is terraform and its AWS provider decoding the
# provider's schema on every command (process accounting of an e2e run: 24 of
# its 31 CPU-minutes). Both are Go programs, so a laxer garbage collector
# cuts that: plan + show -json of one resource took 6.4 CPU-s at the default
# GOGC=100 and 5.1 at 400 (3 runs each), for ~40 MB more heap per process.
# Tests only: the agent leaves its terraform's GOGC to the operator.
TEST_GOGC ?= 400

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: build
build: ## build a static bin/grape (CGO_ENABLED=0, version from git)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/grape ./cmd/grape

IMAGE ?= grape:$(VERSION)

.PHONY: docker
docker: ## build the agent image from deploy/Dockerfile (needs a Docker engine with BuildKit)
	@if ! docker info >/dev/null 2>&1; then \
		echo "make docker needs a running Docker engine (docker info failed), and this machine has none."; \
		echo "On a machine with Docker: docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) ."; \
		exit 1; \
	fi
	DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# Offline machines keep the AWS provider in a filesystem mirror; use it when present.
MIRROR ?= $(wildcard /opt/tf-plugins)
DEMO_DIR ?= $(CURDIR)/.grape/dev

.PHONY: demo
demo: build ## the local default: private PostgreSQL + moto + agent, applies a sample VPC config once and prints its status
	./bin/grape dev --once --data-dir $(DEMO_DIR) --listen '' $(if $(MIRROR),--provider-mirror $(MIRROR))

.PHONY: dev
dev: build ## like demo, but keeps running with the portal on http://127.0.0.1:8080 (Ctrl-C stops)
	./bin/grape dev --data-dir $(DEMO_DIR) $(if $(MIRROR),--provider-mirror $(MIRROR))

.PHONY: test
test: ## install what the tests need (Chromium, a cached OpenTofu build), then vet, gofmt, and every test with -race
	@tofu=$$(scripts/ensure-test-deps) && $(MAKE) --no-print-directory lint && \
	  GRAPE_TEST_TOFU=$$tofu GOGC=$(TEST_GOGC) $(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

.PHONY: test-deps
test-deps: ## install Chromium where missing and build OpenTofu once per version (cached under ~/.cache/grape/tofu)
	@scripts/ensure-test-deps

.PHONY: test-faults
test-faults: ## only the fault-injection and bad-input suites (part of make test)
	$(GO) test -race -timeout $(TEST_TIMEOUT) -run 'Fault|BadInput' -v ./e2e/

# golangci-lint is pinned in its own module (internal/tools/go.mod, so its
# dependencies stay out of Grape's go.mod) and built once per version into a
# cache outside the checkout, shared by every worktree: the first `make lint`
# on a machine builds it from the Go module proxy (~2-4 min), later ones reuse it.
GOLANGCI_VERSION := $(shell awk '$$1 == "github.com/golangci/golangci-lint/v2" {print $$2}' internal/tools/go.mod)
TOOLS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/grape/tools
GOLANGCI_LINT := $(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_VERSION)

$(GOLANGCI_LINT):
	@mkdir -p $(TOOLS_CACHE)
	$(GO) build -C internal/tools -o $@.tmp github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	@mv $@.tmp $@

.PHONY: lint
lint: $(GOLANGCI_LINT) ## go vet, gofmt and golangci-lint (.golangci.yml)
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GOLANGCI_LINT) run $(PKGS)

.PHONY: verify
verify: lint ## lint, plus generated files (supabase migrations, docs) are up to date
	$(GO) test -run 'Generated|Golden|Docs' $(PKGS)
	@git diff --exit-code -- supabase docs || (echo "generated files are stale: run make generate"; exit 1)

.PHONY: generate
generate: ## regenerate supabase/migrations and docs from the code
	$(GO) run ./cmd/grape docs --out docs/cli.md
	$(GO) run ./cmd/grape migrate export --dir supabase/migrations

# Each package's benchmarks with the iteration count that makes them meaningful:
# the queue, log, overhead and policy benchmarks measure whole runs (or take
# their own samples) inside one iteration; git and init ones repeat a single
# operation.
.PHONY: bench
bench: ## run the benchmarks (fsync-on PostgreSQL, real git, terraform) and print a table; ~30 minutes
	@set -o pipefail; tofu=$$(scripts/ensure-test-deps) && export GRAPE_TEST_TOFU=$$tofu && { \
	  $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./reconciler ./pipeline ./logstream ./e2e ./drift ./policy && \
	  $(GO) test -run '^$$' -bench . -skip 'WorkspaceUpkeep' -benchtime 100x -timeout 30m ./gitstore ./redact ./plandiff ./termsafe && \
	  $(GO) test -run '^$$' -bench . -skip 'PruneWhileAppending' -benchtime 3x -timeout 30m ./runner ./render ./store && \
	  $(GO) test -run '^$$' -bench 'WorkspaceUpkeep|PruneWhileAppending' -benchtime 1x -timeout 60m ./gitstore ./store ; \
	} 2>&1 | $(GO) run ./internal/benchtable
