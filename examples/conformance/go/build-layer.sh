#!/usr/bin/env bash
# A layer as Lambda lays out executables for custom runtimes: /opt/bin (on PATH).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=${LAYER_RUNTIME:-go}
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mkdir -p "$t/bin"
printf '#!/bin/sh\necho "layer:%s"\n' "$name" >"$t/bin/lamina-layer"
chmod 755 "$t/bin/lamina-layer"
python3 "$here/../lib/zipdir.py" "${1:?usage: build-layer.sh OUT_ZIP}" "$t"
