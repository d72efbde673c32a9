#!/bin/bash
# Builds lamina's dotnet runtime layer into OUT_DIR. .NET itself is not obtainable here (NuGet and
# Microsoft's feeds are not reachable); this runtime is Mono (Debian's mono-runtime / mono-devel,
# read-only from the host's /usr in every env) running C# compiled with Mono's mcs:
#   runtime/Amazon.Lambda.Core.dll      lamina's build of the Amazon.Lambda.Core interfaces
#   runtime/LaminaDotnetRuntime.exe     the Runtime API loop and handler loader
#   runtime/bootstrap                   exec mono LaminaDotnetRuntime.exe "$_HANDLER"
#   runtime/etc/mono/                   Mono's configuration (dllmap of System.Native etc., machine.config
#                                       with the http:// WebRequest module), copied from the host's
#                                       /etc/mono: envs get a generated /etc; MONO_CFG_DIR points here
#   manifest.json
# Both assemblies are also AOT-compiled (.dll.so/.exe.so beside them) to cut Mono's start-up JIT work.
# Idempotent; needs no network.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "dotnet build: $*" >&2; exit 1; }
MONO=$(command -v mono) || die "mono not found (apt-get install mono-devel)"
MCS=$(command -v mcs) || die "mcs not found (apt-get install mono-devel)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/runtime
mkdir -p "$R"
echo "==> mcs ($("$MCS" --version)): Amazon.Lambda.Core.dll, LaminaDotnetRuntime.exe"
"$MCS" -nologo -debug -optimize+ -target:library -out:"$R/Amazon.Lambda.Core.dll" "$HERE/src/Amazon.Lambda.Core.cs"
"$MCS" -nologo -debug -optimize+ -target:exe -out:"$R/LaminaDotnetRuntime.exe" \
  -r:"$R/Amazon.Lambda.Core.dll" -r:System.Web.Extensions.dll "$HERE/src/LaminaDotnetRuntime.cs"
echo "==> mono --aot: both assemblies"
(cd "$R" && "$MONO" --aot -O=all Amazon.Lambda.Core.dll >/dev/null && "$MONO" --aot -O=all LaminaDotnetRuntime.exe >/dev/null) \
  || die "AOT compilation failed"
[ -f /etc/mono/config ] && [ -f /etc/mono/4.5/machine.config ] || die "no /etc/mono/config (apt-get install mono-runtime)"
echo "==> Mono's configuration from /etc/mono into runtime/etc/mono"
mkdir -p "$R/etc/mono"
cp -r /etc/mono/config /etc/mono/2.0 /etc/mono/4.0 /etc/mono/4.5 "$R/etc/mono/"
sed -e "s|@MONO@|$MONO|" "$HERE/bootstrap" > "$R/bootstrap"
chmod 755 "$R/bootstrap"
chmod -R a+rX "$R"
ver=$("$MONO" --version | head -1 | sed -E 's/.*version ([0-9.]+).*/\1/')
cat > "$STAGE/manifest.json" <<JSON
{"name": "dotnet", "argv": ["/var/runtime/bootstrap"], "env": {},
 "description": "C# on Mono $ver (Debian's mono-runtime from the host's /usr; not .NET): lamina's Runtime API loop and Amazon.Lambda.Core, mcs-compiled and AOT"}
JSON
rm -rf "$OUT/runtime.old"
if [ -d "$OUT/runtime" ]; then mv "$OUT/runtime" "$OUT/runtime.old"; fi
mv "$R" "$OUT/runtime"
mv "$STAGE/manifest.json" "$OUT/manifest.json"
rm -rf "$OUT/runtime.old"
echo "==> dotnet runtime layer built in $OUT (Mono $ver)"
