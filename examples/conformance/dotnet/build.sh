#!/bin/bash
# Builds the dotnet conformance function ZIP: Conformance.dll at the root, compiled with Mono's mcs
# against lamina's Amazon.Lambda.Core (rootfs/runtimes/dotnet) and the layer's ConformanceLayer.dll,
# which is not packaged: at run time it comes from the layer's /opt/dotnet/lib.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
CORE_SRC=$HERE/../../../rootfs/runtimes/dotnet/src/Amazon.Lambda.Core.cs
WORK=$HERE/target
rm -rf "$WORK/fn"
mkdir -p "$WORK/fn" "$WORK/ref"
mcs -nologo -target:library -out:"$WORK/ref/Amazon.Lambda.Core.dll" "$CORE_SRC"
mcs -nologo -target:library -out:"$WORK/ref/ConformanceLayer.dll" "$HERE/layer/Layer.cs"
mcs -nologo -debug -target:library -out:"$WORK/fn/Conformance.dll" \
  -r:"$WORK/ref/Amazon.Lambda.Core.dll" -r:"$WORK/ref/ConformanceLayer.dll" "$HERE/src/Function.cs"
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK/fn" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for n in sys.argv[2:]:
        z.write(n)' "$OUT" Conformance.dll Conformance.dll.mdb)
