#!/usr/bin/env bash
# The nodejs20.x conformance function (CommonJS): index.js.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
cp "$here/index.js" "$t/"
python3 "$here/../lib/zipdir.py" "${1:?usage: build.sh OUT_ZIP}" "$t"
