# Sluice. `make demo` plays the seed scenario end to end; `make test` runs the
# test suite. Both need root (network namespaces) and install missing system
# packages with apt-get the first time (see .ci/install-deps).

GO      ?= go
BIN     := $(CURDIR)/bin
APP     := testenv/scenario/app
GOFLAGS ?=

.PHONY: all build deps app-deps demo test test-short vet clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	@./.ci/install-deps

app-deps: $(APP)/node_modules/.package-lock.json

$(APP)/node_modules/.package-lock.json: $(APP)/package.json $(APP)/package-lock.json
	cd $(APP) && npm ci --no-audit --no-fund

demo: deps build app-deps
	$(BIN)/sluice-demo --bin $(BIN) --app $(APP)

vet:
	$(GO) vet ./...

test: deps app-deps vet
	$(GO) test -count=1 -timeout 30m ./...

test-short:
	$(GO) test -count=1 -short ./...

clean:
	rm -rf $(BIN)
	$(GO) run ./testenv/cmd/$(notdir $(wildcard testenv/cmd/*)) || true
