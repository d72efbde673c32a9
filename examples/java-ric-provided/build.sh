#!/bin/bash
# Builds the java-ric-provided function ZIP: bootstrap, jre/ (a small jlink image of the host's
# OpenJDK 17: a provided runtime has no Java of its own), lib/ (AWS's RIC and its dependencies, from
# Maven Central, cached in target/) and the handler's classes at the root.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_ZIP}
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA17_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
WORK=$HERE/target
# Maven's local repository, shared by the Java examples (cached across runs; LAMINA_EXAMPLES_CACHE as
# for the other examples' downloads).
M2=${LAMINA_EXAMPLES_CACHE:-$(cd "$HERE/../.." && pwd)/target/examples}/m2
mkdir -p "$WORK"
rm -rf "$WORK/zip"
mkdir -p "$WORK/zip/lib"
JAVA_HOME=$JAVA_HOME mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dmaven.repo.local="$M2" \
  dependency:copy-dependencies -DoutputDirectory="$WORK/zip/lib"
"$JAVA_HOME/bin/javac" --release 17 -d "$WORK/zip" -cp "$WORK/zip/lib/*" "$HERE"/src/example/*.java
# The jlink image (~20 s) is kept in target/ and reused while the JDK is the same one.
MODS=java.base,java.logging,jdk.unsupported
STAMP="$MODS $("$JAVA_HOME/bin/java" -version 2>&1 | head -1)"
if [ ! -f "$WORK/jre.stamp" ] || [ "$(cat "$WORK/jre.stamp")" != "$STAMP" ]; then
  rm -rf "$WORK/jre" "$WORK/jre.stamp"
  "$JAVA_HOME/bin/jlink" --module-path "$JAVA_HOME/jmods" --add-modules "$MODS" \
    --strip-debug --no-header-files --no-man-pages --compress=2 --output "$WORK/jre"
  find "$WORK/jre/legal" -type l -delete
  echo "$STAMP" > "$WORK/jre.stamp"
fi
cp -a "$WORK/jre" "$WORK/zip/jre"
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
