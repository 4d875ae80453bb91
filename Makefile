# pscs — see README.md. Every target installs what it needs (.ci/deps).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
export CGO_ENABLED := 1
GO ?= go
FUZZTIME ?= 30s
BENCHTIME ?= 2s

.PHONY: all build deps test demo bench fuzz vet clean install

all: build

deps:
	@bash .ci/deps

build: deps
	$(GO) build -o bin/pscsd ./server/cmd/pscsd
	$(GO) build -o bin/pscs ./client/cmd/pscs
	$(GO) build -buildmode=c-shared -o bin/pscs-pkcs11.so ./client/pkcs11

# go vet with cgo and without it (every package builds where cgo is off;
# those that need it carry a cgo build tag), staticcheck at a pinned
# version run through the Go module proxy (no install step, go.mod
# untouched; v0.8.2 knows Go 1.26), and gofmt.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
vet: deps
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# Installs the commands and the PKCS #11 module, and registers the module
# with p11-kit (a .module file) so that p11-kit-aware programs (GnuTLS,
# NSS through p11-kit-proxy, pkcs11-tool with p11-kit-proxy.so) find it.
PREFIX ?= /usr/local
P11KIT_MODULES ?= $(shell pkg-config --variable=p11_module_configs p11-kit-1 2>/dev/null || echo /usr/share/p11-kit/modules)
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pscs $(DESTDIR)$(P11KIT_MODULES)
	install -m 0755 bin/pscsd bin/pscs $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 bin/pscs-pkcs11.so $(DESTDIR)$(PREFIX)/lib/pscs/pscs-pkcs11.so
	printf '# pscs: remote smart cards (PSCS_CONFIG or ~/.config/pscs/client.conf)\nmodule: %s\ncritical: no\n' \
	  $(PREFIX)/lib/pscs/pscs-pkcs11.so > $(DESTDIR)$(P11KIT_MODULES)/pscs.module

# Unit tests, and integration tests against a private pcscd with vpcd,
# OpenSC and yubico-piv-tool, all with the race detector.
# Every test is listed by name; a failed test's whole output is shown.
# The 0-RTT tests run again without the race detector: with it, the client
# sends no early data (quic-go issue 4303, a race inside quic-go). So does
# the load test, with 1,000 connections (200 under the race detector).
# The console's browser test (chromium, from .ci/deps) must run: without
# chromium it fails instead of skipping.
test: export PSCS_REQUIRE_BROWSER = 1
test: vet
	$(GO) build -o bin/testreport ./internal/testreport
	set -o pipefail; { $(GO) test -race -count=1 -timeout 20m -json ./...; r1=$$?; \
	  $(GO) test -count=1 -json -run '^Test(RoundTrips|ZeroRTTReplay|LostConnectionNotDuplicated|ServerRestart|IdleTimeoutAndKeepalive|ThousandConnections)$$' ./transport; r2=$$?; \
	  exit $$((r1 | r2)); } | bin/testreport

# A private pcscd, two simulated PIV cards, pscs readers, a signature
# verified by OpenSSL; then pscsd --demo and a delegate signing remotely.
demo: build
	$(GO) run ./internal/demo

# Card-side figures (APDU round trip through pcscd, signatures/s), codec
# micro-benchmarks, pscsd's own cost per signature and the throughput of a
# parallel remote card of 1-32 cards at 100 ms per signature through the
# whole server (320 signatures each: a multiple of 32); one whole
# pkcs11-tool --login --sign process through pscs's module and through
# p11-kit's remoting + SoftHSM at 0, 50 and 100 ms RTT, and its round
# trips; then the wire: warm-signature latency at 0-200 ms RTT
# (p50/p99 over 200 signatures each), round trips, and server memory per
# idle connection. Then floods against pscsd --demo with an honest
# delegate signing throughout (20,000 unfinished handshakes; the most
# streams and connections one identity may hold; 1,000,000 signed requests
# from one delegate): pscsd's RSS idle, at its peak and 60 s after, the
# honest delegate's p50/p99 unloaded and loaded, and its refusals.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $$($(GO) list ./... | grep -v -e '/transport$$' -e '/server$$' -e '/peerbench$$' -e '/server/cmd/pscsd$$')
	$(GO) test -run '^$$' -bench ServerSign -benchtime 1000x ./server
	$(GO) test -run '^$$' -bench ParallelThroughServer -benchtime 320x ./server
	$(GO) test -run '^$$' -bench . -benchtime 200x ./transport
	$(GO) test -count=1 -run '^Test(ThousandConnections|RoundTrips)$$' -v ./transport | grep -E 'round trips at|connections opened'
	$(GO) test -count=1 -run '^TestProcessRoundTrips$$' -v ./client/pkcs11/e2e | grep -E 'round trips of a whole'
	$(GO) test -run '^$$' -bench . -benchtime 5x ./internal/peerbench
	$(GO) test -run '^$$' -bench DemoServer -benchtime 50x ./server/cmd/pscsd
	$(GO) test -run '^$$' -bench Flood -benchtime 1x -timeout 60m ./server/cmd/pscsd

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
