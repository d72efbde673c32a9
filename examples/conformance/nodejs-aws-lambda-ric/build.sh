#!/usr/bin/env bash
# AWS's Node.js runtime interface client (npm aws-lambda-ric, pinned) as function code on
# provided.al2023: the ZIP holds the package (its native part built here by npm: needs g++,
# make, cmake, autoconf, automake, libtool from `make deps`), nodejs20.x's conformance index.js
# and a `bootstrap` running it with the host's Node.js. The npm build is cached under
# target/examples (the first build takes minutes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
version=3.3.0  # 4.x needs Node.js >= 22; the machine has 20
cache=${LAMINA_EXAMPLES_CACHE:-$repo/target/examples}/npm-aws-lambda-ric-$version
if [ ! -f "$cache/.done" ]; then
  rm -rf "$cache"; mkdir -p "$cache"
  (cd "$cache" && npm install --no-audit --no-fund --no-save "aws-lambda-ric@$version" >&2)
  touch "$cache/.done"
fi
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mkdir -p "$t/node_modules"
cp -R "$cache/node_modules/aws-lambda-ric" "$t/node_modules/"
# Only what runs: the package's dist and its built addon, not the build tree.
rm -rf "$t/node_modules/aws-lambda-ric/deps" "$t/node_modules/aws-lambda-ric/build" \
  "$t/node_modules/aws-lambda-ric/node-addon-api"
cp "$here/../nodejs20.x/index.js" "$t/"
cat >"$t/bootstrap" <<'SH'
#!/bin/sh
# Layers' packages are in /opt/nodejs/node_modules, as Lambda's nodejs runtimes set NODE_PATH.
export NODE_PATH=/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:/var/task/node_modules:/var/task
exec /usr/bin/node /var/task/node_modules/aws-lambda-ric/bin/index.mjs "$_HANDLER"
SH
chmod 755 "$t/bootstrap"
python3 "$here/../lib/zipdir.py" "${1:?usage: build.sh OUT_ZIP}" "$t"
