#!/bin/bash
# Builds lamina's java17 runtime layer into OUT_DIR:
#   lang/                      a Java 17 runtime image made with jlink from the host's OpenJDK 17 jmods
#                              (bound at /var/lang, as AWS's java17 has its JVM in /var/lang), with a
#                              CDS archive (lib/server/classes.jsa) dumped for it
#   runtime/bootstrap          starts AWS's Java RIC with the JVM flags of AWS's java17 runtime
#   runtime/lib/*.jar          the RIC and its dependencies, from Maven Central (pom.xml beside this file)
#   runtime/lib/jni/*.so       the RIC's JNI client, taken out of its jar so it is not unpacked to /tmp
#   manifest.json
# Maven's local repository is kept in OUT_DIR/.cache/maven (or $LAMINA_RUNTIME_CACHE/maven): once built,
# rebuilding needs no network. Idempotent: the new tree replaces the old one only when complete.
set -euo pipefail
OUT=${1:?usage: build.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA17_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
die() { echo "java17 build: $*" >&2; exit 1; }
[ -x "$JAVA_HOME/bin/java" ] || die "no JDK at $JAVA_HOME (apt-get install openjdk-17-jdk-headless, or set JAVA17_HOME)"
"$JAVA_HOME/bin/java" -version 2>&1 | grep -q 'version "17' || die "$JAVA_HOME is not Java 17"
command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
case $(uname -m) in
  x86_64) JNI=libaws-lambda-jni.linux-x86_64.so ;;
  aarch64) JNI=libaws-lambda-jni.linux-aarch_64.so ;;
  *) die "no RIC native client for $(uname -m)" ;;
esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=${LAMINA_RUNTIME_CACHE:-$OUT/.cache}/maven
STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/runtime/lib/jni"
# The JRE: envs see the host's /usr but a generated /etc, and Debian's JDK keeps conf/security and
# cacerts as symlinks into /etc/java-17-openjdk and /etc/ssl; a jlink image is self-contained.
MODULES=java.se,jdk.unsupported,jdk.crypto.ec,jdk.crypto.cryptoki,jdk.localedata,jdk.zipfs,jdk.charsets
MODULES=$MODULES,jdk.management,jdk.net,jdk.naming.dns,jdk.security.auth,jdk.security.jgss,jdk.httpserver
MODULES=$MODULES,jdk.xml.dom,jdk.jfr
# LAMINA_JAVA_MODULES narrows the image (the tests that ship it inside a 50 MB function ZIP use the
# modules the RIC itself needs: java.base,java.desktop,java.sql,jdk.unsupported).
MODULES=${LAMINA_JAVA_MODULES:-$MODULES}
echo "==> jlink: a Java 17 image of $MODULES from $JAVA_HOME"
"$JAVA_HOME/bin/jlink" --module-path "$JAVA_HOME/jmods" --add-modules "$MODULES" \
  --no-header-files --no-man-pages --compress=2 --output "$STAGE/lang"
# Debian's legal/ entries are symlinks; keep the files themselves (a layer is copied and zipped).
find "$STAGE/lang/legal" -type l | while read -r l; do
  t=$(readlink -f "$l" || true); rm -f "$l"; [ -f "$t" ] && cp "$t" "$l"; done
if [ -f /etc/ssl/certs/java/cacerts ]; then cp /etc/ssl/certs/java/cacerts "$STAGE/lang/lib/security/cacerts"; fi
echo "==> class data sharing archive for the image (lib/server/classes.jsa)"
"$STAGE/lang/bin/java" -Xshare:dump -XX:SharedArchiveFile="$STAGE/lang/lib/server/classes.jsa" >/dev/null
offline=()
# With everything already in the local repository, stay offline (the build must work without network).
[ -f "$CACHE/.complete" ] && offline=(-o)
echo "==> Maven: AWS's Java RIC and its dependencies (pom.xml) ${offline:+offline, }into runtime/lib; local repository $CACHE"
# Maven's colour codes (jansi) would reach the build log as escape sequences.
JAVA_HOME=$JAVA_HOME MAVEN_OPTS="${MAVEN_OPTS:-} -Djansi.passthrough=false" \
  mvn -q -B -Dstyle.color=never "${offline[@]}" -f "$HERE/pom.xml" -Dmaven.repo.local="$CACHE" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$STAGE/runtime/lib" 2>&1 \
  | sed -e 's/\x1b\[[0-9;]*m//g'
touch "$CACHE/.complete"
ls "$STAGE/runtime/lib" | sed 's/^/    /'
RIC=$(ls "$STAGE"/runtime/lib/aws-lambda-java-runtime-interface-client-*.jar)
(cd "$STAGE/runtime/lib" && "$JAVA_HOME/bin/jar" xf "$RIC" "jni/$JNI")
[ -f "$STAGE/runtime/lib/jni/$JNI" ] || die "$JNI not found in $RIC"
echo "==> JNI client jni/$JNI taken out of $(basename "$RIC")"
sed -e "s|@JNI_LIB@|$JNI|" "$HERE/bootstrap" > "$STAGE/runtime/bootstrap"
chmod 755 "$STAGE/runtime/bootstrap"
chmod -R a+rX "$STAGE/runtime" "$STAGE/lang"
jdk="OpenJDK $("$JAVA_HOME/bin/java" -version 2>&1 | head -1 | sed -E 's/.*version "([^"]+)".*/\1/')"
ric=$(basename "$RIC" .jar)
cat > "$STAGE/manifest.json" <<JSON
{"name": "java17", "argv": ["/var/runtime/bootstrap"], "env": {"JAVA_HOME": "/var/lang"},
 "description": "Java 17: AWS's $ric (Maven Central) on a jlink image of the host's $jdk at /var/lang"}
JSON
for d in runtime lang; do
  rm -rf "$OUT/$d.old"
  if [ -d "$OUT/$d" ]; then mv "$OUT/$d" "$OUT/$d.old"; fi
  mv "$STAGE/$d" "$OUT/$d"
  rm -rf "$OUT/$d.old"
done
mv "$STAGE/manifest.json" "$OUT/manifest.json"
echo "==> java17 runtime layer built in $OUT (lang $(du -sh "$OUT/lang" | cut -f1), runtime $(du -sh "$OUT/runtime" | cut -f1))"
