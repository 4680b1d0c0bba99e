FROM rust:1.80 AS builder
WORKDIR /usr/src/app
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=target-cache,target=/usr/src/app/target \
    cargo build --release && cp target/release/app /app

FROM debian:bookworm-slim
COPY --from=builder /app /usr/local/bin/app
CMD ["app"]
