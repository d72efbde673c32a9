#!/bin/sh
# /init of the lamina cgroup-v2 test guest (busybox sh).  Built into the
# initramfs by tests/vm/setup.sh; booted by tests/vm/run.sh.
#
# Stage 1 (PID 1 in the initramfs):
#   mount proc/sys/devtmpfs and a pure cgroup v2 hierarchy, enable the
#   controllers, load the 9p/overlay modules, mount the host's / (9p tag
#   "hostroot", read-only) as the lower layer of an overlay whose upper layer
#   is a tmpfs (so the guest's root is writable but the host is never
#   written), put fresh tmpfs on /tmp /var/tmp /run /var/lib/lamina, move
#   /proc /sys /dev into it, then switch_root into it (not chroot: in a
#   chroot the kernel refuses new user namespaces).
# Stage 2 (PID 1 in the host's root, run by a copy of busybox):
#   run the job from the 9p share "lamina_job" (job.sh, written by run.sh)
#   and report exactly one verdict line, on the console and on the second
#   serial port (the channel run.sh trusts), then power off:
#       LAMINA-VM-RESULT: PASS
#       LAMINA-VM-RESULT: FAIL rc=<n>
# Any crash before that (panic, init dying) ends qemu without a verdict,
# which run.sh treats as a failure.

VM=/run/lamina-vm            # in the new root: busybox, job share, raw mounts
BB=$VM/busybox

verdict() {
    line="LAMINA-VM-RESULT: $*"
    # the last close of a serial tty waits until its output is sent, so the
    # line is out before the power-off
    echo "$line" > /dev/ttyS1 2>/dev/null
    echo "$line"
    sync
    poweroff -f
    sleep 5; echo b > /proc/sysrq-trigger   # poweroff should not return
}

if [ "$1" = stage2 ]; then
    # ------------------------------------------------------------ stage 2
    export PATH=$VM/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    [ -f "$VM/job/job.sh" ] || verdict "FAIL rc=254"
    read -r up _ < /proc/uptime
    echo "lamina-vm: guest ready after ${up}s of guest uptime; running the job"
    if [ -x /bin/bash ]; then sh=/bin/bash; else sh=/bin/sh; fi
    # stdin is /dev/null (CI has none either)
    "$sh" "$VM/job/job.sh" < /dev/null
    rc=$?
    read -r up _ < /proc/uptime
    echo "lamina-vm: job exited with status $rc at ${up}s of guest uptime"
    if [ "$rc" = 0 ]; then verdict PASS; else verdict "FAIL rc=$rc"; fi
    exit 1
fi

# ---------------------------------------------------------------- stage 1
export PATH=/bin:/sbin
fail() { echo "lamina-vm: init: $*"; verdict "FAIL rc=255"; }

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
exec < /dev/console > /dev/console 2>&1
grep -qw lamina.trace /proc/cmdline && set -x

# pure cgroup v2 (the kernel was booted with cgroup_no_v1=all)
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
for c in cpu memory pids io; do
    if grep -qw "$c" /sys/fs/cgroup/cgroup.controllers; then
        echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || fail "cannot enable $c"
    fi
done

kver=$(uname -r)
for m in $(cat /etc/lamina-vm/boot-modules); do
    modprobe "$m" || fail "modprobe $m failed"
done

# the job share first: it says where the job's working directory is
mkdir -p /mnt/job /mnt/host /mnt/rw
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=none,msize=262144 lamina_job /mnt/job \
    || fail "cannot mount the job share"
# shellcheck disable=SC1091
. /mnt/job/vm.conf   # LAMINA_VM_CWD

mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /mnt/host \
    || fail "cannot mount the host's / over 9p"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
if ! mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /newroot; then
    echo "lamina-vm: overlay over 9p failed; using the read-only host root"
    mount --bind /mnt/host /newroot || fail "cannot bind the host root"
fi
R=/newroot

# Fresh tmpfs where the tests write (an overlay cannot be the upper layer of
# another overlay, so lamina's own overlays need a real tmpfs under them).
# If the job's cwd lives under one of them, keep it visible through the
# overlay by moving a bind mount of it back on top.
keep=""
for d in /tmp /var/tmp /run /var/lib/lamina; do
    case "$LAMINA_VM_CWD/" in
        "$d"/*) mkdir -p /mnt/keep; mount --bind "$R$LAMINA_VM_CWD" /mnt/keep && keep=$LAMINA_VM_CWD ;;
    esac
    mkdir -p "$R$d"
    case $d in /tmp|/var/tmp) mode=1777 ;; *) mode=0755 ;; esac
    mount -t tmpfs -o "mode=$mode,nosuid,nodev" tmpfs "$R$d" || fail "cannot mount tmpfs on $d"
done
if [ -n "$keep" ]; then
    mkdir -p "$R$keep" && mount --move /mnt/keep "$R$keep" || fail "cannot keep $keep visible"
fi

# what stage 2 needs, outside the old rootfs (switch_root empties it)
mkdir -p "$R$VM/bin" "$R$VM/job" "$R$VM/hostroot" "$R$VM/rw"
cp /bin/busybox "$R$BB"
cp /init "$R$VM/init"
for a in poweroff sync sleep; do ln -s ../busybox "$R$VM/bin/$a"; done
mount --move /mnt/job "$R$VM/job"
mount --move /mnt/host "$R$VM/hostroot"
mount --move /mnt/rw "$R$VM/rw"

# this kernel's modules, so that modprobe (and the kernel's request_module)
# work after the switch; the host's /lib/modules has none for this kernel
mkdir -p "$R/lib/modules/$kver" 2>/dev/null && cp -a "/lib/modules/$kver/." "$R/lib/modules/$kver/" \
    || echo "lamina-vm: warning: cannot copy the modules into the guest root"

for d in proc sys dev; do
    mkdir -p "$R/$d"
    mount --move "/$d" "$R/$d" || fail "cannot move /$d"
done
mkdir -p "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$R/dev/pts"
ln -sf pts/ptmx "$R/dev/ptmx" 2>/dev/null || true
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
mount -t mqueue mqueue "$R/dev/mqueue" 2>/dev/null || true
mount -t securityfs securityfs "$R/sys/kernel/security" 2>/dev/null || true
ln -sf /proc/self/fd "$R/dev/fd" 2>/dev/null || true

hostname lamina-vm
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

exec switch_root "$R" "$BB" sh "$VM/init" stage2
fail "switch_root failed"
