#!/usr/bin/env bash
# nodejs20.x: lamina's own Node.js runtime loop (runtime/index.mjs, no dependencies) on Node.js 20
# composed from the host's toolchain: the `node` binary (Node.js 20.x, from the machine's
# packages) is copied into lang/bin, so the layer keeps working if the host's node changes.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
node=${LAMINA_NODE:-$(command -v node || true)}
[ -n "$node" ] || { echo "nodejs20.x: no node on PATH (install Node.js 20)" >&2; exit 1; }
ver=$("$node" -p 'process.versions.node')
case "$ver" in 20.*) ;; *) echo "nodejs20.x: $node is Node.js $ver, not 20.x" >&2; exit 1 ;; esac
echo "==> Node.js $ver from $node"
missing=$(ldd "$node" | awk '/not found/ {print $1}')
[ -z "$missing" ] || { echo "nodejs20.x: $node needs missing libraries: $missing" >&2; exit 1; }
mkdir -p "$out/lang/bin" "$out/runtime"
echo "==> copying node into lang/bin ($(du -h "$node" | cut -f1))"
cp "$(readlink -f "$node")" "$out/lang/bin/node"
echo "==> copying the runtime loop"
cp "$src/runtime/index.mjs" "$out/runtime/index.mjs"
cat >"$out/manifest.json" <<JSON
{
  "name": "nodejs20.x",
  "argv": ["/var/lang/bin/node", "/var/runtime/index.mjs"],
  "env": {
    "NODE_PATH": "/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task"
  },
  "description": "Node.js $ver (host binary copied into lang/) with lamina's runtime loop (CommonJS and ES modules, async and callback handlers)"
}
JSON
echo "==> done"
