#!/usr/bin/env bash
# A layer as Lambda lays out Python's: /opt/python/lamina_layer.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mkdir -p "$t/python"
printf 'def hello():\n    return "layer:python3.11"\n' >"$t/python/lamina_layer.py"
python3 "$here/../lib/zipdir.py" "${1:?usage: build-layer.sh OUT_ZIP}" "$t"
