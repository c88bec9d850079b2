# Sluice. `make demo` plays the seed scenario end to end; `make test` runs the
# test suite. Both need root (network namespaces) and install missing system
# packages with apt-get the first time (see .ci/install-deps).

GO      ?= go
BIN     := $(CURDIR)/bin
APP     := testenv/scenario/app
GOFLAGS ?=
# The BPF objects are built with Debian 12's clang, pinned to this version,
# so that CI can rebuild them byte for byte.
CLANG         ?= clang-14
CLANG_VERSION := 14.0.6

.PHONY: all build install uninstall manifests deps app-deps demo test test-short fuzz vet clean generate check-generated bench bench-quick bench-deps bench-build chaos soak compose-test

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# make install [PREFIX=/usr/local] [DESTDIR=]: the binaries, the systemd
# units (ExecStart pointing at $(PREFIX)/bin) and, only where none exists,
# the example /etc/sluice/agent.yaml (docs/deploy.md). CONFDIR (default
# /etc/sluice) moves the configuration, and the units with it.
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(PREFIX)/bin
UNITDIR := $(PREFIX)/lib/systemd/system
CONFDIR ?= /etc/sluice
UNITS   := $(notdir $(wildcard deploy/systemd/*.service))

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR)
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	install -m 0755 $(BIN)/agent $(BIN)/agentctl $(DESTDIR)$(BINDIR)/
	for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/etc/sluice/|$(CONFDIR)/|g' deploy/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	@if [ -e $(DESTDIR)$(CONFDIR)/agent.yaml ]; then \
		echo "kept $(DESTDIR)$(CONFDIR)/agent.yaml (the example is deploy/systemd/agent.yaml)"; \
	else install -m 0600 deploy/systemd/agent.yaml $(DESTDIR)$(CONFDIR)/agent.yaml; fi

# Removes what install put in place; the configuration only if unchanged,
# never the state (/var/lib/sluice) or the pins (agent cleanup does).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/agent $(DESTDIR)$(BINDIR)/agentctl
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	@if cmp -s deploy/systemd/agent.yaml $(DESTDIR)$(CONFDIR)/agent.yaml; then rm -f $(DESTDIR)$(CONFDIR)/agent.yaml; \
	elif [ -e $(DESTDIR)$(CONFDIR)/agent.yaml ]; then echo "kept $(DESTDIR)$(CONFDIR)/agent.yaml: it was changed"; fi
	-rmdir $(DESTDIR)$(CONFDIR) 2>/dev/null

# deploy/kubernetes: the Helm chart deploy/helm/sluice rendered with its
# default values, through Helm's library (a test keeps them equal).
manifests:
	SLUICE_UPDATE_MANIFESTS=1 $(GO) test -count=1 -run '^TestManifests$$' ./deploy/

deps:
	@./.ci/install-deps

app-deps: $(APP)/node_modules/.package-lock.json

$(APP)/node_modules/.package-lock.json: $(APP)/package.json $(APP)/package-lock.json
	cd $(APP) && npm ci --no-audit --no-fund

demo: deps build app-deps
	$(BIN)/sluice-demo --bin $(BIN) --app $(APP)

generate:
	@$(CLANG) --version 2>/dev/null | head -n 1 | grep -q 'clang version $(CLANG_VERSION)' || \
		{ echo "make generate needs Debian's clang $(CLANG_VERSION) as $(CLANG) (apt-get install clang-14 llvm-14 libbpf-dev)" >&2; exit 1; }
	$(GO) generate ./loader/

# Rebuilds the BPF objects and bindings and fails if they differ from the
# committed ones.
check-generated: generate
	@if [ -n "$$(git status --porcelain -- loader/ bpf/)" ]; then \
		git status --short -- loader/ bpf/; \
		echo "the generated BPF objects differ from the committed ones: run make generate and commit them" >&2; exit 1; fi

vet:
	$(GO) vet ./...

test: deps app-deps vet
	$(GO) test -count=1 -timeout 30m ./...

test-short:
	$(GO) test -count=1 -short ./...

# Every fuzz target (func Fuzz* in any package, found by .ci/fuzz), one after
# the other, FUZZTIME each, e.g. make fuzz FUZZTIME=10m; FUZZPARALLEL sets the
# workers per target. Prints the CPU time each took. CI runs each briefly.
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) ./.ci/fuzz

# Fault injection (testenv/chaos, docs/chaos.md): kill -9 and restart the
# hub, each agent and PostgreSQL, the hub unreachable, uplinks down, packet
# loss, conntrack flushed, while pgbench runs through the portal; SIGTERM
# and SIGHUP; kill -9 mid-stream (truncation). CHAOS=long (the default,
# ~6 minutes, 20 truncation trials each) or short (CI, ~3 minutes).
CHAOS ?= long
chaos: deps
	SLUICE_CHAOS=$(CHAOS) $(GO) test -count=1 -v -timeout 90m -run TestChaos ./testenv/chaos/

# Soak: pgbench with 100 clients through the portal for SOAK (default 10m;
# CI runs 1m), the hub's and both agents' RSS, descriptors and goroutines
# every 10 s; fails if one grows without bound.
SOAK ?= 10m
soak: deps
	SLUICE_SOAK=$(SOAK) $(GO) test -count=1 -v -timeout 0 -run TestSoak ./testenv/chaos/

clean:
	rm -rf $(BIN)
	$(GO) run ./testenv/cmd/$(notdir $(wildcard testenv/cmd/*)) || true

# Benchmarks (bench/README.md): Sluice against raw TCP, socat, stunnel,
# ssh -L and WireGuard in the seed topology; ratios, never asserted speeds.
bench-deps: deps
	@./.ci/install-bench-deps

bench-build: build
	$(GO) build -o $(BIN)/ ./bench/cmd/...

# The full run (~10 minutes): writes bench/out/ and rewrites the results
# section of bench/README.md and bench/results.svg.
bench: bench-deps bench-build
	$(BIN)/sluice-bench run --bin $(BIN) --out bench/out --readme bench/README.md --svg bench/results.svg

# Same paths and metrics, very short samples (under 2 minutes), then a check
# that every path has every figure (or a reason why it could not run).
bench-quick: bench-deps bench-build
	$(BIN)/sluice-bench run --quick --bin $(BIN) --out bench/out
	$(BIN)/sluice-bench check --bin $(BIN) bench/out/results.json

# The agent's container image (deploy/docker/Dockerfile, docs/container.md),
# built here with buildah from a local Go build image, without a registry.
IMAGE ?= localhost/sluice-agent:dev
.PHONY: image clean-images
image:
	deploy/docker/build.sh $(IMAGE)

# Removes what make image and TestImageScenario keep: $(IMAGE), the local Go
# build image and the module and build caches of the image build.
clean-images:
	deploy/docker/build.sh --clean $(IMAGE)

# The seed's story with Docker Compose (examples/docker-compose): installs
# docker.io, docker-compose and debootstrap if missing, starts dockerd if
# none runs, builds the images from a local Debian base, plays the explicit
# and transparent variants, checks the app's rows, isolation and a capture of
# the internet network; removes all it made, also on failure (~6 min cold).
compose-test: app-deps
	./examples/docker-compose/test.sh
