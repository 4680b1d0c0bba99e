#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component for wasm32-wasip2.
set -eu
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --quiet --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{stem}}.wasm" "{{name}}.wasm"
echo "built $(pwd)/{{name}}.wasm"
