#!/usr/bin/env bash
# The nodejs20.x conformance function as an ES module: index.mjs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
cp "$here/index.mjs" "$t/"
python3 "$here/../lib/zipdir.py" "${1:?usage: build.sh OUT_ZIP}" "$t"
