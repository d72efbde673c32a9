#!/usr/bin/env bash
# Prepare everything the cgroup-v2 test guest needs (idempotent).
#
#  * host packages: qemu-system-x86, busybox-static, cpio, kmod (apt-get)
#  * a Debian bookworm generic 6.1 kernel (linux-image-6.1.0-N-amd64),
#    fetched with `apt-get download` and unpacked with `dpkg-deb -x`
#    (never installed on the host)
#  * a busybox initramfs holding tests/vm/init.sh as /init plus the kernel
#    modules the guest needs (virtio-pci, 9p, overlay, ...) with their
#    dependencies, resolved through depmod's modules.dep
#
# Everything lands in $LAMINA_VM_CACHE (default /var/cache/lamina-vm), which
# survives between runs; whatever is missing or stale is rebuilt.  On success
# the last line of stdout is the path of "$LAMINA_VM_CACHE/guest.env", a
# shell fragment describing the guest (kernel, initramfs, boot arguments).
#
# Environment:
#   LAMINA_VM_CACHE        cache directory (default /var/cache/lamina-vm)
#   LAMINA_VM_KERNEL_PKG   exact kernel package (default: the bookworm
#                          generic 6.1 package that linux-image-amd64 points
#                          to; an already cached one is reused)
#   LAMINA_VM_MODULES      extra modules to put in the guest (space separated)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${LAMINA_VM_CACHE:-/var/cache/lamina-vm}
log() { echo "lamina-vm setup: $*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "error: command failed at line $LINENO: $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, qemu virtfs of /)"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9    # two runs at once must not build the same cache concurrently

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        apt_updated=1
    fi
}

# ---------------------------------------------------------------- packages
# package -> a file that proves it is installed
declare -A need=(
    [qemu-system-x86]=/usr/bin/qemu-system-x86_64
    [busybox-static]=/bin/busybox
    [cpio]=/bin/cpio
    [kmod]=/sbin/depmod
    [coreutils]=/usr/bin/timeout
    [util-linux]=/usr/bin/flock
    [xz-utils]=/usr/bin/xz
)
missing=()
for p in "${!need[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || [ ! -e "${need[$p]}" ]; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
        apt_update_once
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
            || die "apt-get install ${missing[*]} failed"
    fi
fi

# ------------------------------------------------------------------ kernel
# Only the bookworm generic 6.1 flavour: the cloud flavour lacks 9p, and
# qemu 7.2 (bookworm) crashes in early boot on a good share of 6.12 boots.
kpkg_re='^linux-image-6\.1\.0-[0-9]+-amd64$'

resolve_kernel_pkg() {
    local p
    p=$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[^ ]*\).*/\1/p' | grep -E "$kpkg_re" | head -1 || true)
    if [ -z "$p" ]; then
        p=$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null | grep -E "$kpkg_re" \
            | sort -t- -k5,5n | tail -1 || true)
    fi
    echo "$p"
}

kpkg=${LAMINA_VM_KERNEL_PKG:-}
if [ -n "$kpkg" ]; then
    [[ $kpkg =~ $kpkg_re ]] || log "warning: $kpkg is not a bookworm generic 6.1 kernel package"
elif [ -f "$cache/kernel.pkg" ] && [ -f "$cache/kernel/$(cat "$cache/kernel.pkg")/vmlinuz" ]; then
    kpkg=$(cat "$cache/kernel.pkg")      # reuse what is cached: no network
else
    kpkg=$(resolve_kernel_pkg)
    if [ -z "$kpkg" ]; then apt_update_once; kpkg=$(resolve_kernel_pkg); fi
    [ -n "$kpkg" ] || die "no package matching $kpkg_re in the apt lists"
fi
kver=${kpkg#linux-image-}
kdir=$cache/kernel/$kpkg

if [ ! -f "$kdir/vmlinuz" ] || [ ! -f "$kdir/config" ] || [ ! -f "$kdir/modules/modules.dep" ]; then
    log "fetching $kpkg"
    tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    debs=("$cache"/deb/"${kpkg}"_*_amd64.deb)
    if [ ! -f "${debs[0]}" ]; then
        mkdir -p "$cache/deb"
        dl() { (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >&2); }
        if ! dl; then
            # stale lists: the package may have been superseded since
            apt_update_once
            if [ -z "${LAMINA_VM_KERNEL_PKG:-}" ]; then
                kpkg=$(resolve_kernel_pkg); kver=${kpkg#linux-image-}; kdir=$cache/kernel/$kpkg
            fi
            [ -n "$kpkg" ] && dl || die "apt-get download $kpkg failed"
        fi
        rm -f "$cache"/deb/linux-image-*.deb   # keep only one kernel .deb
        mv "$tmp"/"${kpkg}"_*_amd64.deb "$cache/deb/"
        debs=("$cache"/deb/"${kpkg}"_*_amd64.deb)
    fi
    dpkg-deb -x "${debs[0]}" "$tmp/root"
    [ -d "$tmp/root/lib/modules/$kver" ] || die "$kpkg has no /lib/modules/$kver"
    # the package ships no modules.dep (the postinst makes it): make it here
    depmod -b "$tmp/root" "$kver"
    rm -rf "$kdir"; mkdir -p "$kdir"
    cp "$tmp/root/boot/vmlinuz-$kver" "$kdir/vmlinuz"
    cp "$tmp/root/boot/config-$kver" "$kdir/config"
    # keep the whole module tree (≈400 MB) so that the module list can
    # change without a new download; the initramfs only gets a subset
    mv "$tmp/root/lib/modules/$kver" "$kdir/modules"
    rm -rf "$tmp"; trap - EXIT
    echo "$kpkg" > "$cache/kernel.pkg"
    # drop kernels cached by earlier runs
    find "$cache/kernel" -mindepth 1 -maxdepth 1 ! -name "$kpkg" -exec rm -rf {} +
fi
echo "$kpkg" > "$cache/kernel.pkg"

cfg() { sed -n "s/^$1=//p" "$kdir/config" | tr -d '"'; }

# Boot the uncompressed vmlinux through its PVH entry point when possible:
# decompressing the xz bzImage under emulation costs ~5 s of every boot.
kernel=$kdir/vmlinuz
if [ "$(cfg CONFIG_PVH)" = y ] && [ "$(cfg CONFIG_KERNEL_XZ)" = y ]; then
    if [ ! -s "$kdir/vmlinux" ]; then
        off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$kdir/vmlinuz" | head -1 | cut -d: -f1 || true)
        if [ -n "$off" ] && xz -dc --single-stream < <(tail -c +$((off + 1)) "$kdir/vmlinuz") > "$kdir/vmlinux.tmp" 2>/dev/null \
            && [ "$(head -c4 "$kdir/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
            mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
        else
            rm -f "$kdir/vmlinux.tmp"; log "warning: cannot extract vmlinux; booting the bzImage"
        fi
    fi
    [ -s "$kdir/vmlinux" ] && kernel=$kdir/vmlinux
fi
for c in CONFIG_9P_FS CONFIG_NET_9P_VIRTIO CONFIG_OVERLAY_FS CONFIG_VIRTIO_PCI CONFIG_CGROUPS; do
    case $(cfg $c) in y|m) ;; *) die "$kpkg lacks $c" ;; esac
done

# ------------------------------------------------------------ boot args
bootargs="console=ttyS0 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 panic=-1 mitigations=off"
landlock=no
if [ "$(cfg CONFIG_SECURITY_LANDLOCK)" = y ]; then
    landlock=yes
    lsm=$(cfg CONFIG_LSM)
    case ",$lsm," in
        *,landlock,*) ;;                                   # on by default
        *) bootargs="$bootargs lsm=landlock,$lsm" ;;       # enable it
    esac
else
    log "warning: $kpkg has no CONFIG_SECURITY_LANDLOCK"
fi

# -------------------------------------------------------------- initramfs
# Modules loaded at boot (needed to reach the host's root) and modules only
# copied into the guest (loaded on demand by the kernel through modprobe).
boot_modules="virtio_pci 9pnet_virtio 9p overlay"
extra_modules="veth bridge tun dummy ${LAMINA_VM_MODULES:-}"

# resolve a module name (with its dependencies) to paths in modules.dep
resolve_mods() {
    awk -v want="$*" '
        BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) { g = w[i]; gsub("-", "_", g); W[g] = 1 } }
        {
            sub(":", "", $1); dep[$1] = ""; for (i = 2; i <= NF; i++) dep[$1] = dep[$1] " " $i
            name = $1; sub(".*/", "", name); sub("\\.ko.*", "", name); gsub("-", "_", name); path[name] = $1
        }
        function add(p,   k, d, m) {
            if (p in seen) return; seen[p] = 1; print p
            k = split(dep[p], d, " "); for (m = 1; m <= k; m++) add(d[m])
        }
        END { for (g in W) { if (!(g in path)) { print "MISSING " g; continue } add(path[g]) } }
    ' "$kdir/modules/modules.dep"
}

stamp_src=$( {
    cat "$here/init.sh" "$0"
    echo "$kpkg $boot_modules $extra_modules $bootargs"
    dpkg-query -W -f='${Version}\n' busybox-static
} | sha256sum | cut -d' ' -f1)
initrd=$kdir/initramfs.cpio.gz

if [ ! -f "$initrd" ] || [ "$(cat "$kdir/initramfs.stamp" 2>/dev/null)" != "$stamp_src" ]; then
    log "building initramfs for $kver"
    mods=$(resolve_mods $boot_modules $extra_modules)
    if grep -q '^MISSING' <<<"$mods"; then
        die "modules not in $kpkg: $(grep '^MISSING' <<<"$mods" | cut -d' ' -f2 | tr '\n' ' ')"
    fi
    ir=$(mktemp -d "$cache/.initramfs.XXXXXX")
    trap 'rm -rf "$ir"' EXIT
    mkdir -p "$ir"/{bin,sbin,dev,proc,sys,mnt,newroot,etc/lamina-vm,lib/modules/"$kver"}
    cp /bin/busybox "$ir/bin/busybox"
    for a in $(busybox --list); do
        [ "$a" = busybox ] || ln -s busybox "$ir/bin/$a"
    done
    for f in $mods; do
        install -D -m 0644 "$kdir/modules/$f" "$ir/lib/modules/$kver/$f"
    done
    cp "$kdir/modules/modules.builtin" "$kdir/modules/modules.builtin.modinfo" \
        "$kdir/modules/modules.order" "$ir/lib/modules/$kver/"
    depmod -b "$ir" "$kver"
    install -m 0755 "$here/init.sh" "$ir/init"
    echo "$boot_modules" > "$ir/etc/lamina-vm/boot-modules"
    # device nodes the kernel needs before devtmpfs is mounted
    mknod -m 0600 "$ir/dev/console" c 5 1
    mknod -m 0666 "$ir/dev/null" c 1 3
    (cd "$ir" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -1 > "$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    echo "$stamp_src" > "$kdir/initramfs.stamp"
    rm -rf "$ir"; trap - EXIT
fi

cat > "$cache/guest.env.tmp" <<EOF
LAMINA_VM_KPKG=$kpkg
LAMINA_VM_KVER=$kver
LAMINA_VM_KERNEL=$kernel
LAMINA_VM_INITRD=$initrd
LAMINA_VM_BOOTARGS="$bootargs"
LAMINA_VM_LANDLOCK=$landlock
EOF
mv "$cache/guest.env.tmp" "$cache/guest.env"
echo "$cache/guest.env"
