#!/bin/bash
# Builds the hello-dotnet function ZIP: Hello.dll, compiled with Mono's mcs against lamina's
# Amazon.Lambda.Core (rootfs/runtimes/dotnet/src).
set -euo pipefail
OUT=${1:?usage: build.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$HERE/target
rm -rf "$WORK"
mkdir -p "$WORK/fn"
mcs -nologo -target:library -out:"$WORK/Amazon.Lambda.Core.dll" "$HERE/../../rootfs/runtimes/dotnet/src/Amazon.Lambda.Core.cs"
mcs -nologo -target:library -out:"$WORK/fn/Hello.dll" -r:"$WORK/Amazon.Lambda.Core.dll" "$HERE/Hello.cs"
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK/fn" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.write("Hello.dll")' "$OUT")
