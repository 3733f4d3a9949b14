# chatguard — build, run and test. `make test` is what CI runs (.ci/run).
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILDDATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG        = github.com/chatguard/chatguard/internal/buildinfo
LDFLAGS    = -s -w -X $(PKG).version=$(VERSION) -X $(PKG).revision=$(REVISION) -X $(PKG).buildDate=$(BUILDDATE)
# A count, not a duration: go test -fuzz can report a spurious failure when a
# time budget runs out on a loaded machine (golang/go#75804).
FUZZTIME  ?= 3000x

LEAK_DURATION ?= 3m

.PHONY: build run test lint unit test-monitoring fuzz test-error-coverage test-memory-leak test-rate-limits bench-http bench-ws clean test-e2e test-socket-stress demo

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/chatguard ./cmd/chatguard

run:
	$(GO) run ./cmd/chatguard

## test: everything CI checks: formatting, vet, the race-enabled suite (goleak in
## every package's TestMain), the alert rules' unit tests (promtool) and a short
## run of every fuzz target. test-e2e and test-socket-stress (below) run between
## test-monitoring and fuzz.
test: lint unit test-monitoring test-e2e test-socket-stress fuzz

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd bench && $(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

## test-monitoring: the Prometheus rules checked and unit-tested by promtool
## (Debian's prometheus package; .ci/run installs it). The Go tests in
## deploy/monitoring and cmd/chatguard check the rest offline.
test-monitoring:
	promtool check rules deploy/monitoring/rules.yaml
	promtool test rules deploy/monitoring/prometheusrule.test.yaml

## fuzz: every Fuzz target for FUZZTIME executions (make fuzz FUZZTIME=5m for a real session).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg >/dev/null || \
	      { echo "FAIL: $$f in $$pkg (see testdata/fuzz)"; exit 1; }; \
	  done; \
	done

## test-error-coverage: the envelope tests (errors package and the proxy's
## end-to-end envelope tests), then the coverage of package errors (target >= 90 %).
test-error-coverage:
	$(GO) test -count=1 -coverpkg=./errors/ -coverprofile=coverage.errors.out ./errors/ ./proxy/
	@$(GO) tool cover -func=coverage.errors.out | tail -1 | \
	  awk '{ sub("%","",$$3); print "errors package coverage: " $$3 "%"; if ($$3+0 < 90) { print "below the 90% target"; exit 1 } }'

## test-rate-limits: the seed's command: the limiter (memory, Redis, Redis Cluster,
## failover under kill -9, persistence, abuse) and the proxy's auth and limit tests.
test-rate-limits:
	$(GO) test -race -count=1 -v ./limiter/ ./internal/identity/
	$(GO) test -race -count=1 -v -run 'Login|Role|RequiredAuth|Shadow|Abusive|Forwarded|Reload|Spelling' ./proxy/
	$(GO) test -race -count=1 -v -run 'Restart|DeadRedis|ConfigReload' ./cmd/chatguard/

## test-memory-leak: the seed's memory-leak test, shortened: unique keys churn
## through the seed's tables for LEAK_DURATION; the live heap must stay flat.
test-memory-leak:
	CHATGUARD_LEAK_DURATION=$(LEAK_DURATION) $(GO) test -count=1 -timeout 0 -v -run '^TestMemoryLeakChurn$$' ./sessions/

E2E_DIR = examples/legacy-chat

## test-e2e: the built binary in front of the sample app (examples/legacy-chat),
## driven by real Socket.IO, ws and HTTP clients (node --test; needs Node 20+).
test-e2e: build
	cd $(E2E_DIR) && npm ci --no-audit --no-fund && \
	  CHATGUARD_BIN=$(CURDIR)/bin/chatguard node --test --test-concurrency=1 test/*.test.js

## test-socket-stress: STRESS_CLIENTS (500) concurrent Socket.IO clients, STRESS_WAVES (3)
## times; sockets, tables and goroutines must come back to where they started.
test-socket-stress: build
	cd $(E2E_DIR) && npm ci --no-audit --no-fund && \
	  CHATGUARD_BIN=$(CURDIR)/bin/chatguard node test/stress.js

## demo: the sample app on :3000 behind chatguard on :8080 (admin :9090); Ctrl-C stops both.
## DEMO_APP_PORT, DEMO_PORT and DEMO_ADMIN_PORT choose other ports.
demo: build
	cd $(E2E_DIR) && npm ci --no-audit --no-fund && CHATGUARD_BIN=$(CURDIR)/bin/chatguard ./demo.sh

bench-http:
	bash bench/http/run.sh

## bench-ws: the WebSocket relay against direct connections: memory per idle
## client, throughput, added latency (bench/README.md).
bench-ws:
	bash bench/ws/run.sh

clean:
	rm -rf bin coverage.*.out
