#!/usr/bin/env bash
# The Go conformance function: a static `bootstrap` built with aws-lambda-go (from the Go module
# proxy, pinned by go.sum; the module cache keeps it for offline rebuilds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
(cd "$here" && CGO_ENABLED=0 go build -tags lambda.norpc -trimpath -o "$t/bootstrap" .)
python3 "$here/../lib/zipdir.py" "${1:?usage: build.sh OUT_ZIP}" "$t"
