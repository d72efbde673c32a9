#!/usr/bin/env bash
# The ruby3.1 conformance function: lambda_function.rb.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
cp "$here/lambda_function.rb" "$t/"
python3 "$here/../lib/zipdir.py" "${1:?usage: build.sh OUT_ZIP}" "$t"
