# syntax=docker/dockerfile:1
#
# chatguard's image: a static binary on distroless, running as non-root.
#
#   docker build -t ghcr.io/chatguard/chatguard:0.1.0 \
#     --build-arg VERSION=0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 … (the
# build stage runs on the builder's platform and cross-compiles; no emulation).
# deploy/kubernetes/dockerfile_test.go checks this file against the Makefile.

# ---- build ---------------------------------------------------------------
# The Go version of go.mod's go line.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src

# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

# The same build as `make build` (see LDFLAGS in the Makefile): static (no
# cgo, so no libc is needed at run time), reproducible paths, version injected.
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
ARG BUILD_DATE=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w -X github.com/chatguard/chatguard/internal/buildinfo.version=$VERSION -X github.com/chatguard/chatguard/internal/buildinfo.revision=$REVISION -X github.com/chatguard/chatguard/internal/buildinfo.buildDate=$BUILD_DATE" \
      -o /out/chatguard ./cmd/chatguard

# ---- run -----------------------------------------------------------------
# distroless static: CA certificates (rediss://, an https:// upstream), tzdata
# and /etc/passwd with the nonroot user; no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=dev
ARG REVISION=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="chatguard" \
      org.opencontainers.image.description="Reverse proxy sidecar for Node.js/Socket.IO chat backends: rate limits, error envelopes, bounded memory, metrics" \
      org.opencontainers.image.source="https://github.com/chatguard/chatguard" \
      org.opencontainers.image.url="https://github.com/chatguard/chatguard" \
      org.opencontainers.image.documentation="https://github.com/chatguard/chatguard#readme" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.created="$BUILD_DATE" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"

COPY --from=build /out/chatguard /chatguard

# nonroot (65532), numeric so that Kubernetes' runAsNonRoot can verify it.
# The default relative paths (./logs, ./profiles, temp/rate-limits.json)
# land in the writable home directory; with a read-only root filesystem, point
# them at a volume (the Kubernetes manifests use /var/lib/chatguard).
USER 65532:65532
WORKDIR /home/nonroot

# 8080: the public listener (CHATGUARD_LISTEN); 9090: the admin listener
# (CHATGUARD_ADMIN_LISTEN: /metrics /healthz /readyz /drain).
EXPOSE 8080 9090

# Exec form: chatguard is PID 1 and gets SIGTERM itself, which starts its drain.
ENTRYPOINT ["/chatguard"]
CMD ["serve"]
