#!/bin/bash
# Builds the java17 conformance layer ZIP: java/lib/conformance-layer.jar (-> /opt/java/lib).
set -euo pipefail
OUT=${1:?usage: build-layer.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA17_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
WORK=$HERE/target/layer
rm -rf "$WORK"
mkdir -p "$WORK/classes" "$WORK/zip/java/lib"
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/classes" "$HERE"/layer/conformancelayer/*.java
"$JAVA_HOME/bin/jar" --create --file "$WORK/zip/java/lib/conformance-layer.jar" -C "$WORK/classes" .
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK/zip" && "$JAVA_HOME/bin/jar" --create --no-manifest --file "$OUT" java)
