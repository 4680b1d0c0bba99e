# syntax=docker/dockerfile:1.7
ARG GO_VERSION=1.22
ARG RUNTIME=gcr.io/distroless/static-debian12

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app ./cmd/app

FROM ${RUNTIME}
COPY --from=build /out/app /app
USER 65532:65532
ENTRYPOINT ["/app"]
