# fedgrid — run `make help` for the targets.
STATICCHECK_VERSION ?= v0.8.2
REDOCLY_VERSION ?= 2.77.0
SHELL := /bin/bash
GO ?= go
BIN := bin/fedgrid
PKGS := ./...
# What `fedgrid version` reports (internal/version); VERSION defaults to the source's own.
VERSION ?=
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
DIRTY ?= $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true)
VPKG := github.com/fedgrid/fedgrid/internal/version
LDFLAGS := -X $(VPKG).Commit=$(COMMIT) -X $(VPKG).Dirty=$(DIRTY) $(if $(VERSION),-X $(VPKG).Version=$(VERSION))
# Tests that drive the real binary find it here.
export FEDGRID_BIN := $(CURDIR)/$(BIN)
# The Python tests start a local network with this (examples/localnet).
export FEDGRID_LOCALNET := $(CURDIR)/bin/localnet
# Debian's python3 (with python3-pytest, -torch, -numpy, -pandas, -nbconvert), not a pyenv shim.
PYTHON ?= /usr/bin/python3

.PHONY: help build localnet test test-python test-short demo bench bench-ingest bench-search300 lint fmt vet tidy-check check clean ui ui-check image-context image deploy-check test-netns docs openapi-lint

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/fedgrid
	@mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/fedgrid

localnet: ## build bin/localnet, the local network the Python tests and the notebook use
	@mkdir -p bin
	$(GO) build -o bin/localnet ./examples/localnet

test: build ## unit, in-process multi-peer and multi-process tests (race detector on), then the Python tests
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	@$(MAKE) --no-print-directory test-python

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test-python: build localnet ## the Python package's tests and the notebook (python/tests)
	@$(PYTHON) -c 'import pytest' 2>/dev/null || { echo "test-python: $(PYTHON) has no pytest (Debian: apt-get install python3-pytest)"; exit 1; }
	cd python && $(PYTHON) -m pytest -q -rs -p no:cacheprovider tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "test-python: pytest collected no tests"; exit 1; fi; exit $$rc

test-netns: build ## fedgrid across NATs between network namespaces (root; ip, iptables)
	FEDGRID_NETNS=1 $(GO) test -count=1 -run TestNetworkNamespaces -v -timeout 15m ./e2e/

test-short: build ## the quick tests only
	$(GO) test -short -count=1 $(PKGS)

demo: build ## network + two gateways + two nodes + a data scientist, on loopback
	$(GO) run ./examples/demo --bin $(CURDIR)/$(BIN) --data examples/data

# The admin web app (ui/). Its build, ui/dist, is committed and embedded by
# go:embed, so `go build` needs no Node.js; ui-check (run by CI) rebuilds it
# from the sources with the locked dependencies and fails if it differs.
ui: ## build the admin web app into ui/dist (npm ci + vite build)
	cd ui && npm ci --no-audit --no-fund && npm run build

ui-check: ui ## rebuild ui/dist and fail if it differs from the committed build
	@git diff --exit-code --stat -- ui/dist || { echo "ui/dist differs from ui/src: run make ui and commit ui/dist"; exit 1; }
	@out=$$(git status --porcelain --untracked-files=all -- ui/dist); if [ -n "$$out" ]; then echo "ui/dist has uncommitted files: $$out"; exit 1; fi

bench: build ## training speed vs PyTorch, job dispatch, search, budget spends, federated rounds, 1 GB upload, streamed training on 1 GB, gateway RSS preparing a job on 1 GB (see BENCHMARKS.md)
	./bench/run.sh
	$(GO) test -run XXX -bench Dispatch -benchtime 300x -timeout 30m ./gateway/
	$(GO) test -run XXX -bench NodeIdleRSS -benchtime 1x -timeout 10m ./gateway/
	$(GO) test -run XXX -bench Search -benchtime 20x -timeout 30m ./gateway/
	$(GO) test -run XXX -bench Budget -benchtime 5000x ./gateway/store/
	$(GO) test -run XXX -bench 'Round$$' -benchtime 3x ./crypto/secagg/
	$(GO) test -run XXX -bench RoundGraph -benchtime 1x ./crypto/secagg/
	$(GO) test -run XXX -bench FederatedRound -benchtime 1x -timeout 60m ./gateway/
	FEDGRID_BIN=$(CURDIR)/$(BIN) $(GO) test -run XXX -bench ResumableUpload -benchtime 1x -timeout 40m ./e2e/
	$(GO) test -run XXX -bench StreamTraining -benchtime 1x -timeout 40m ./gateway/
	$(GO) test -run XXX -bench GatewayPrepare -benchtime 1x -timeout 40m ./gateway/
	@$(MAKE) --no-print-directory bench-ingest

# 301 peers on two cores: the gateways start and index for minutes, hence
# not part of bench (which runs 10, 50 and 100).
bench-search300: ## search across 10, 50, 100 and 300 gateways in one run (15+ minutes; BENCHMARKS.md)
	FEDGRID_BENCH_GATEWAYS=10,50,100,300 $(GO) test -run XXX -bench Search -benchtime 20x -timeout 60m ./gateway/

bench-ingest: ## ingest a generated 1 GB CSV (5M x 20) from a file: MB/s vs a raw read, peak RSS (BENCHMARKS.md)
	@mkdir -p bin
	$(GO) build -o bin/ingestbench ./bench/ingestbench
	bin/ingestbench -rows $${INGEST_ROWS:-5000000} -cols 20

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	$(GO) vet $(PKGS)

lint: vet ## go vet + staticcheck + gofmt check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

docs: ## regenerate the reference manual's generated files (docs/api, docs/cli)
	$(GO) run ./cmd/fedgrid gen-docs --dir docs

openapi-lint: ## lint the gateway's OpenAPI document (docs/api/openapi.json) with Redocly CLI, through npx
	$(GO) run ./cmd/fedgrid gen-docs --check --dir docs
	npx --yes @redocly/cli@$(REDOCLY_VERSION) lint docs/api/openapi.json

tidy-check: ## go mod tidy leaves no diff
	$(GO) mod tidy && git diff --exit-code go.mod go.sum

check: lint openapi-lint ui-check tidy-check test ## everything CI runs

# The container image (deploy/Containerfile): a static binary built here and
# copied in, with the CA certificates and a passwd for the non-root user.
IMAGE ?= localhost/fedgrid:$(or $(VERSION),dev)
IMAGE_CONTEXT ?= build/image
image-context: ## the build context of deploy/Containerfile in $(IMAGE_CONTEXT)
	rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)/data
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS) -s -w" -o $(IMAGE_CONTEXT)/fedgrid ./cmd/fedgrid
	cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_CONTEXT)/
	printf 'fedgrid:x:65532:65532:fedgrid:/data:/sbin/nologin\n' > $(IMAGE_CONTEXT)/passwd
	printf 'fedgrid:x:65532:\n' > $(IMAGE_CONTEXT)/group

image: image-context ## build the container image $(IMAGE) with podman
	podman build -f deploy/Containerfile -t $(IMAGE) $(IMAGE_CONTEXT)

deploy-check: ## check the image (podman, chroot), systemd units and Helm chart (CI, as root)
	./deploy/check.sh

clean: ## remove build output
	rm -rf bin build
