#!/bin/sh
# Builds {{name}}.wasm from app.py with componentize-py
# (`pip install componentize-py==0.25.1`).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w builder componentize app -o "{{name}}.wasm" >/dev/null
echo "built $(pwd)/{{name}}.wasm"
