#!/usr/bin/env bash
# Last step of `make test`: nothing of lamina's may be left on the host: no mounts, no cgroups, no
# sandbox processes, no lamina processes, no instance dirs, no test temp dirs.
set -uo pipefail
fail=0
say() { echo "leak-check: $*"; fail=1; }
m=$(grep -c lamina /proc/self/mountinfo || true)
[ "$m" -gt 0 ] && say "$m mounts mention lamina: $(grep lamina /proc/self/mountinfo | head -3)"
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
  [ -d "$d" ] || continue
  c=$(find "$d" -maxdepth 3 -type d -name 'lamina*' 2>/dev/null)
  [ -n "$c" ] && say "cgroups left: $c"
done
p=$(pgrep -u 993 2>/dev/null || true)
[ -n "$p" ] && say "sandbox-uid processes left: $p"
p=$(pgrep -x lamina 2>/dev/null || true)
[ -n "$p" ] && say "lamina processes left: $p"
if [ -d /run/lamina ] && [ -n "$(ls -A /run/lamina)" ]; then say "instance dirs left: $(ls -A /run/lamina)"; fi
t=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'lamina-test-*' 2>/dev/null)
[ -n "$t" ] && say "test temp dirs left: $t"
[ "$fail" = 0 ] && echo "leak-check: clean"
exit $fail
