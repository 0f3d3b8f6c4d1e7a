# fedgrid — run `make help` for the targets.
STATICCHECK_VERSION ?= v0.8.2
SHELL := /bin/bash
GO ?= go
BIN := bin/fedgrid
PKGS := ./...
# Tests that drive the real binary find it here.
export FEDGRID_BIN := $(CURDIR)/$(BIN)

.PHONY: help build test test-short demo bench lint fmt vet tidy-check check clean ui ui-check

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/fedgrid
	@mkdir -p bin
	$(GO) build -o $(BIN) ./cmd/fedgrid

test: build ## unit, in-process multi-peer and multi-process tests (race detector on)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

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

bench: build ## training speed vs PyTorch, job dispatch, search, budget spends (see BENCHMARKS.md)
	./bench/run.sh
	$(GO) test -run XXX -bench Dispatch -benchtime 300x -timeout 30m ./gateway/
	$(GO) test -run XXX -bench Search -benchtime 20x -timeout 30m ./gateway/
	$(GO) test -run XXX -bench Budget -benchtime 5000x ./gateway/store/

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	$(GO) vet $(PKGS)

lint: vet ## go vet + staticcheck + gofmt check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

tidy-check: ## go mod tidy leaves no diff
	$(GO) mod tidy && git diff --exit-code go.mod go.sum

check: lint ui-check tidy-check test ## everything CI runs

clean: ## remove build output
	rm -rf bin
