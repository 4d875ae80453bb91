# pscs — see README.md. Every target installs what it needs (.ci/deps).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
export CGO_ENABLED := 1
GO ?= go
FUZZTIME ?= 30s
BENCHTIME ?= 2s

.PHONY: all build deps test demo bench fuzz vet clean

all: build

deps:
	@bash .ci/deps

build: deps
	$(GO) build -o bin/pscsd ./server/cmd/pscsd
	$(GO) build -o bin/pscs ./client/cmd/pscs

vet: deps
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# Unit tests, and integration tests against a private pcscd with vpcd,
# OpenSC and yubico-piv-tool, all with the race detector.
# Every test is listed by name; a failed test's whole output is shown.
test: vet
	$(GO) build -o bin/testreport ./internal/testreport
	set -o pipefail; $(GO) test -race -count=1 -timeout 20m -json ./... | bin/testreport

# A private pcscd, two simulated PIV cards, pscs readers, a signature
# verified by OpenSSL.
demo: build
	$(GO) run ./internal/demo

bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

# Runs every fuzz target for FUZZTIME each.
fuzz: deps
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf bin
