#!/bin/bash
# Builds the java17 RequestStreamHandler conformance function ZIP: classes at the root, Gson in lib/
# (both from Maven Central, cached in target/ beside this file). The layer class comes from
# ../java17/layer (compiled against, not packaged: at run time it is the layer's /opt/java/lib jar).
set -euo pipefail
OUT=${1:?usage: build.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA17_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
WORK=$HERE/target
# Maven's local repository, shared by the Java examples (cached across runs; LAMINA_EXAMPLES_CACHE as
# for the other examples' downloads).
M2=${LAMINA_EXAMPLES_CACHE:-$(cd "$HERE/../../.." && pwd)/target/examples}/m2
mkdir -p "$WORK"
rm -rf "$WORK/deps" "$WORK/zip" "$WORK/layer-classes"
JAVA_HOME=$JAVA_HOME mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dmaven.repo.local="$M2" \
  dependency:copy-dependencies -DoutputDirectory="$WORK/deps"
mkdir -p "$WORK/zip/lib" "$WORK/layer-classes"
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/layer-classes" "$HERE"/../java17/layer/conformancelayer/*.java
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/zip" -cp "$WORK/deps/*:$WORK/layer-classes" \
  "$HERE"/src/conformance/*.java
cp "$WORK"/deps/gson-*.jar "$WORK/zip/lib/"
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK/zip" && "$JAVA_HOME/bin/jar" --create --no-manifest --file "$OUT" .)
