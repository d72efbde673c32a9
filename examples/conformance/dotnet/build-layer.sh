#!/bin/bash
# Builds the dotnet conformance layer ZIP: dotnet/lib/ConformanceLayer.dll (-> /opt/dotnet/lib).
set -euo pipefail
OUT=${1:?usage: build-layer.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$HERE/target/layer
rm -rf "$WORK"
mkdir -p "$WORK/dotnet/lib"
mcs -nologo -target:library -out:"$WORK/dotnet/lib/ConformanceLayer.dll" "$HERE/layer/Layer.cs"
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    z.write("dotnet"); z.write("dotnet/lib"); z.write("dotnet/lib/ConformanceLayer.dll")' "$OUT")
