#!/usr/bin/env bash
# python3.11: lamina's own bootstrap (stdlib only) run by the host's Debian python3 (bookworm
# ships 3.11). Nothing to fetch: the layer is the bootstrap sources and the manifest. lamina
# also installs this layer itself at `lamina serve` start (it is embedded in the binary).
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
echo "==> checking /usr/bin/python3"
ver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$ver" = 3.11 ] || { echo "python3.11: /usr/bin/python3 is $ver, not 3.11" >&2; exit 1; }
echo "==> copying the bootstrap"
mkdir -p "$out"
rm -rf "$out/runtime"
cp -R "$src/runtime" "$out/runtime"
find "$out/runtime" -name __pycache__ -prune -exec rm -rf {} +
cp "$src/manifest.json" "$out/manifest.json"
chmod -R a+rX,go-w "$out"
