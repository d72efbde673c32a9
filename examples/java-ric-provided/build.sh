#!/bin/bash
# Builds the java-ric-provided function ZIP: bootstrap, jre/ (a small jlink image of the host's
# OpenJDK 17: a provided runtime has no Java of its own), lib/ (AWS's RIC and its dependencies, from
# Maven Central, cached in target/) and the handler's classes at the root.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA17_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
WORK=$HERE/target
mkdir -p "$WORK"
rm -rf "$WORK/zip"
mkdir -p "$WORK/zip/lib"
JAVA_HOME=$JAVA_HOME mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dmaven.repo.local="$WORK/m2" \
  dependency:copy-dependencies -DoutputDirectory="$WORK/zip/lib"
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/zip" -cp "$WORK/zip/lib/*" "$HERE"/src/example/*.java
"$JAVA_HOME/bin/jlink" --module-path "$JAVA_HOME/jmods" --add-modules java.base,java.logging,jdk.unsupported \
  --strip-debug --no-header-files --no-man-pages --compress=2 --output "$WORK/zip/jre"
find "$WORK/zip/jre/legal" -type l -delete
install -m 755 "$HERE/bootstrap" "$WORK/zip/bootstrap"
OUT=$(realpath -m "$OUT")
rm -f "$OUT"
(cd "$WORK/zip" && python3 -c 'import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk("."):
        for f in files:
            p = os.path.join(root, f)
            info = zipfile.ZipInfo(os.path.relpath(p))
            info.external_attr = (os.stat(p).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, open(p, "rb").read())' "$OUT")
