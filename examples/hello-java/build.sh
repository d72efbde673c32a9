#!/bin/bash
# Builds the hello-java function ZIP (classes at the root); aws-lambda-java-core from Maven Central.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA17_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
WORK=$HERE/target
# Maven's local repository, shared by the Java examples (cached across runs; LAMINA_EXAMPLES_CACHE as
# for the other examples' downloads).
M2=${LAMINA_EXAMPLES_CACHE:-$(cd "$HERE/../.." && pwd)/target/examples}/m2
mkdir -p "$WORK"
JAVA_HOME=$JAVA_HOME mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dmaven.repo.local="$M2" \
  dependency:copy-dependencies -DoutputDirectory="$WORK/deps"
rm -rf "$WORK/classes"
mkdir -p "$WORK/classes"
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/classes" -cp "$WORK/deps/*" "$HERE"/src/hello/*.java
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK/classes" && "$JAVA_HOME/bin/jar" --create --no-manifest --file "$OUT" .)
