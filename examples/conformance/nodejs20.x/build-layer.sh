#!/usr/bin/env bash
# A layer as Lambda lays out Node.js's: /opt/nodejs/node_modules/lamina-layer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=${LAYER_RUNTIME:-nodejs20.x}
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mkdir -p "$t/nodejs/node_modules/lamina-layer"
printf '{"name":"lamina-layer","version":"1.0.0","main":"index.js"}\n' >"$t/nodejs/node_modules/lamina-layer/package.json"
printf 'exports.hello = () => "layer:%s";\n' "$name" >"$t/nodejs/node_modules/lamina-layer/index.js"
python3 "$here/../lib/zipdir.py" "${1:?usage: build-layer.sh OUT_ZIP}" "$t"
