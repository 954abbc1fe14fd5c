# io.rrc.v1 — the two commands a user needs are `make demo` and `make test`.
# Both install what is missing first (make setup) and are safe to re-run.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$(PATH)
PREFIX ?= /usr/local
GO ?= go
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BINARIES := bin/containerd-shim-rrc-v1 bin/rrcctl bin/rrc-uffd
# Packages run one at a time: several of them bring up a lab and time a
# failover, and two cores shared by parallel packages make those figures noise.
E2E_PKGS := ./test/...
UNIT_PKGS := $(shell $(GO) list ./... 2>/dev/null | grep -v '/test/')

GOLANGCI_LINT ?= golangci-lint

.PHONY: all build install setup lab-up lab-down demo test unit e2e integration vet lint fuzz bench clean

all: build

build: $(BINARIES)

bin/%: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

install: build
	install -m 0755 $(BINARIES) $(PREFIX)/bin/
	@echo "install: $(notdir $(BINARIES)) in $(PREFIX)/bin"

setup:
	bash contrib/setup/setup.sh

lab-up: setup install
	test/lab/lab.sh up

lab-down:
	test/lab/lab.sh down

demo: setup install
	test/demo/demo.sh

# -tags measure: the measurements make bench runs are built only with it.
vet:
	$(GO) vet -tags measure ./...

# golangci-lint v2 with .golangci.yml (installed by make setup).
lint:
	$(GOLANGCI_LINT) run ./...

# Unit tests under the race detector; the engine's lab tests (named *Lab:
# real CRIU, processes in lab hosts, failover timing) run without it, as the
# race detector's slowdown makes their heartbeats miss.
unit:
	$(GO) test -race -count=1 -p 1 -timeout 20m -skip 'Lab$$' $(UNIT_PKGS)
	$(GO) test -count=1 -p 1 -timeout 20m -run 'Lab$$' $(UNIT_PKGS)

e2e: install
	$(GO) test -count=1 -p 1 -timeout 30m $(E2E_PKGS)

# containerd's client integration tests with io.containerd.runc.v2 and then
# io.rrc.v1: fails when io.rrc.v1 fails a test that runc passes.
integration: install
	test/integration/run.sh both

# Under CI a missing prerequisite fails a test instead of skipping it
# (test/prereq, test/integration/run.sh); the target-specific export
# reaches the prerequisites' recipes too.
test: export CI := true
test: setup install vet lint unit e2e integration

# Measurements into docs/BENCHMARKS.md (not part of make test).
bench: setup install
	test/bench/bench.sh

# Short fuzzing of every Fuzz target in the tree (their seed corpora also run
# in `make unit`). FUZZTIME per target.
FUZZTIME ?= 20s
fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u | while read -r d; do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$d/*_test.go | cut -d' ' -f2); do \
			echo "fuzz: $$d $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$d || exit 1; \
		done; \
	done

clean:
	rm -rf bin
