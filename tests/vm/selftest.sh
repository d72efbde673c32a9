#!/usr/bin/env bash
# Self-check of the cgroup-v2 test guest.
#
#   tests/vm/selftest.sh [-n RUNS]    boot the guest RUNS times (default 1),
#                                      run the checks below inside each, and
#                                      report boot/run times and failures
#   tests/vm/selftest.sh --guest       the checks themselves (run by the above
#                                      inside the guest)
#
# Checks: pure cgroup v2 (controllers memory/cpu/pids, one "0::" line in
# /proc/self/cgroup, no v1 hierarchy mounted), overlay mounts, namespaces
# (unshare -m -p -n -u -i -f --mount-proc, and a user namespace), a child
# cgroup with memory.max / pids.max / cpu.max that is enforced (limits read
# back from memory.events, pids.events and cpu.stat, never from wall-clock
# time: the guest's clock drifts under emulation), Landlock active, dynamic
# host binaries (python3, cargo, lamina) running from the shared host root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" != --guest ]; then
    runs=1
    [ "${1:-}" = -n ] && runs=${2:?-n needs a number}
    pass=0; fail=0; times=()
    for i in $(seq 1 "$runs"); do
        echo "=== selftest run $i/$runs"
        out=$(mktemp)
        "$here/run.sh" -- bash "$here/selftest.sh" --guest 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        t=$(sed -n 's/^lamina-vm: guest run took \([0-9.]*s[^;]*\);.*/\1/p' "$out" | tail -1)
        times+=("run $i: rc=$rc ${t:-no timing}")
        if [ "$rc" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
        rm -f "$out"
    done
    echo "=== selftest summary"
    printf '  %s\n' "${times[@]}"
    echo "vm-selftest: $pass passed, $fail failed"
    [ "$fail" = 0 ]
    exit
fi

# ------------------------------------------------------------- in the guest
ok=0; bad=0
check() {   # check NAME COMMAND...
    local name=$1; shift
    local out up0 up1
    read -r up0 _ < /proc/uptime
    out=$("$@" 2>&1); local rc=$?
    read -r up1 _ < /proc/uptime
    out="$out${out:+ }($(awk -v a="$up0" -v b="$up1" 'BEGIN { printf "%.1f", b - a }')s)"
    if [ "$rc" = 0 ]; then
        ok=$((ok + 1)); echo "ok   $name${out:+: $out}"
    else
        bad=$((bad + 1)); echo "FAIL $name${out:+: $out}"
    fi
}

controllers() {
    local c; read -r c < /sys/fs/cgroup/cgroup.controllers
    for w in memory cpu pids; do [[ " $c " == *" $w "* ]] || { echo "missing $w in '$c'"; return 1; }; done
    echo "$c"
}
pure_v2() {
    [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "/sys/fs/cgroup is $(stat -f -c %T /sys/fs/cgroup)"; return 1; }
    [ "$(wc -l < /proc/self/cgroup)" = 1 ] && grep -q '^0::/' /proc/self/cgroup \
        || { cat /proc/self/cgroup; return 1; }
    ! grep -q ' cgroup ' /proc/mounts || { grep ' cgroup ' /proc/mounts; return 1; }
    echo "$(cat /proc/self/cgroup), subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
}
overlay() {
    local d; d=$(mktemp -d /tmp/ovl.XXXXXX)
    mkdir "$d"/{lower,upper,work,merged}; echo low > "$d/lower/f"
    mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" || return 1
    echo up >> "$d/merged/f"
    local r; r=$(cat "$d/upper/f" | tr '\n' ' ')
    umount "$d/merged"; rm -rf "$d"
    [ "$r" = "low up " ] || { echo "upper has '$r'"; return 1; }
}
namespaces() {
    unshare -m -p -n -u -i -f --mount-proc true || return 1
    unshare -m -p -n -u -i -f --mount-proc sh -c '[ "$$" = 1 ]' || { echo "not pid 1 in the new pid ns"; return 1; }
    unshare -U -r -m -p -f --mount-proc sh -c '[ "$(id -u)" = 0 ]' || { echo "user namespace refused"; return 1; }
}
cg=/sys/fs/cgroup/lamina-vmtest
in_cgroup() {   # in_cgroup CMD...: run CMD in $cg
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$@"
}
cgroup_move() {
    mkdir "$cg" || return 1
    echo $((32 << 20)) > "$cg/memory.max" || return 1
    sleep 30 & local pid=$!
    echo "$pid" > "$cg/cgroup.procs" || return 1
    local where; where=$(cat "/proc/$pid/cgroup")
    kill "$pid"; wait "$pid" 2>/dev/null
    [ "$where" = "0::/lamina-vmtest" ] || { echo "sleep is in '$where'"; return 1; }
    echo "memory.max=$(cat "$cg/memory.max")"
}
memory_limit() {
    echo 0 > "$cg/memory.swap.max" 2>/dev/null
    in_cgroup perl -e '$x = "a" x (128 << 20); print "survived\n"' >/dev/null 2>&1
    local oom; oom=$(sed -n 's/^oom_kill //p' "$cg/memory.events")
    [ "${oom:-0}" -ge 1 ] || { echo "no oom_kill (memory.events: $(tr '\n' ' ' < "$cg/memory.events"))"; return 1; }
    echo "oom_kill=$oom"
}
pids_limit() {
    echo 4 > "$cg/pids.max" || return 1
    # fork 8 children that wait on a pipe; forks past the limit fail (EAGAIN)
    in_cgroup perl -e 'pipe(my $r, my $w); my @k; for (1..8) { my $p = fork; last unless defined $p;
        if (!$p) { close $w; <$r>; exit 0 } push @k, $p } close $w; waitpid($_, 0) for @k; print scalar(@k), "\n"' >/dev/null 2>&1
    local m; m=$(sed -n 's/^max //p' "$cg/pids.events")
    echo max > "$cg/pids.max"
    [ "${m:-0}" -ge 1 ] || { echo "pids.max never hit"; return 1; }
    echo "pids.events max=$m"
}
cpu_limit() {
    # 20% of one CPU; burn for a while, then judge from cpu.stat deltas only
    stat() { sed -n "s/^$1 //p" "$cg/cpu.stat"; }
    local u0 p0 t0 usage periods throttled
    u0=$(stat usage_usec); p0=$(stat nr_periods); t0=$(stat nr_throttled)
    echo "20000 100000" > "$cg/cpu.max" || return 1
    in_cgroup timeout 3 sh -c 'while :; do :; done'
    usage=$(( $(stat usage_usec) - u0 ))
    periods=$(( $(stat nr_periods) - p0 ))
    throttled=$(( $(stat nr_throttled) - t0 ))
    echo max > "$cg/cpu.max"
    [ "$periods" -gt 0 ] && [ "$throttled" -gt 0 ] || { echo "periods=$periods throttled=$throttled"; return 1; }
    # usage per period must stay near the 20 ms quota (slack for the last period)
    local per=$((usage / periods))
    [ "$per" -le 25000 ] || { echo "usage per period ${per}us > quota"; return 1; }
    echo "usage/period=${per}us nr_periods=$periods nr_throttled=$throttled"
}
cgroup_remove() { rmdir "$cg" && [ ! -e "$cg" ]; }
landlock() {
    [ -r /sys/kernel/security/lsm ] || mount -t securityfs securityfs /sys/kernel/security
    local lsm; lsm=$(cat /sys/kernel/security/lsm)
    [[ ",$lsm," == *,landlock,* ]] || { echo "lsm=$lsm"; return 1; }
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) = ABI version
    local abi; abi=$(perl -e 'print syscall(444, 0, 0, 1)')
    [ "$abi" -ge 1 ] 2>/dev/null || { echo "landlock ABI query returned '$abi'"; return 1; }
    echo "lsm=$lsm abi=$abi"
}
dyn_python() { python3 -c 'import sys; print(sys.version.split()[0])'; }
dyn_cargo() { cargo --version; }
dyn_lamina() {
    local bin=${LAMINA_BIN:-}
    if [ -z "$bin" ]; then
        for b in "$here"/../../target/{release,debug}/lamina; do [ -x "$b" ] && { bin=$b; break; }; done
    fi
    [ -n "$bin" ] || { echo "no lamina binary built (skipped)"; return 0; }
    "$bin" --help > /dev/null && echo "$bin --help ok"
}

echo "guest: $(uname -r), layout=${LAMINA_CGROUP_LAYOUT:-?}, cwd=$(pwd)"
check "cgroup2 controllers" controllers
check "pure cgroup v2" pure_v2
check "overlay mount in /tmp" overlay
check "namespaces (mnt,pid,net,uts,ipc,user)" namespaces
check "cgroup create + move" cgroup_move
check "memory.max enforced" memory_limit
check "pids.max enforced" pids_limit
check "cpu.max enforced (cpu.stat)" cpu_limit
check "cgroup remove" cgroup_remove
check "landlock active" landlock
check "dynamic binary: python3" dyn_python
if command -v cargo > /dev/null; then check "dynamic binary: cargo" dyn_cargo; fi
check "dynamic binary: lamina" dyn_lamina
echo "guest-selftest: $ok passed, $bad failed"
[ "$bad" = 0 ]
