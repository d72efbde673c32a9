#!/bin/bash
# Builds the java17 conformance function ZIP (classes at the root, as Lambda's Java ZIPs lay them out).
# aws-lambda-java-core comes from Maven Central (cached in target/ beside this file); the layer's class
# is compiled against but not packaged: at run time it comes from the layer's /opt/java/lib jar.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA17_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
WORK=$HERE/target
# Maven's local repository, shared by the Java examples (cached across runs; LAMINA_EXAMPLES_CACHE as
# for the other examples' downloads).
M2=${LAMINA_EXAMPLES_CACHE:-$(cd "$HERE/../../.." && pwd)/target/examples}/m2
mkdir -p "$WORK"
JAVA_HOME=$JAVA_HOME mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dmaven.repo.local="$M2" \
  dependency:copy-dependencies -DoutputDirectory="$WORK/deps"
rm -rf "$WORK/classes" "$WORK/layer-classes"
mkdir -p "$WORK/classes" "$WORK/layer-classes"
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/layer-classes" "$HERE"/layer/conformancelayer/*.java
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/classes" -cp "$WORK/deps/*:$WORK/layer-classes" \
  "$HERE"/src/conformance/*.java
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK/classes" && "$JAVA_HOME/bin/jar" --create --no-manifest --file "$OUT" .)
