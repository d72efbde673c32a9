#!/usr/bin/env bash
# An OS-only runtime: the function brings its own `bootstrap` (/var/task/bootstrap). The layer is
# the manifest alone; lamina also installs it itself at `lamina serve` start.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out/runtime"
cp "$src/manifest.json" "$out/manifest.json"
chmod -R a+rX,go-w "$out"
