# shellcheck shell=bash
#
# A Debian 12 root file system with systemd, for booting with systemd-nspawn. Source this file.
#
#   rr_rootfs_tarball    echoes the path of a cached tarball of the root, making it on first use
#                        (debootstrap, ~3 minutes and ~250 MB; later runs reuse the tarball)
#
# The mirror is the one this machine's apt already uses (the first URIs: line of its
# debian.sources, or the first `deb` line of sources.list): no mirror is named here.
# RR_ROOTFS_CACHE (default /var/cache/region-replicator-test) holds the tarball.

RR_ROOTFS_SUITE=bookworm
# What the service needs at run time (its Depends:, procps for /bin/kill included), what systemd needs to boot, and nothing
# else: the package's own dependencies must already be satisfied so that `apt-get install
# ./…deb` inside the container needs no network.
RR_ROOTFS_INCLUDE=systemd,systemd-sysv,dbus,procps,libpq5,librdkafka1,libstdc++6,libgcc-s1

rr_apt_mirror() {
    local f uri=""
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        uri=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' "$f")
        [[ -n "$uri" ]] && break
    done
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    [[ -n "$uri" ]] || { printf 'error: no Debian mirror found in /etc/apt/sources.list*\n' >&2; return 1; }
    printf '%s\n' "$uri"
}

rr_rootfs_tarball() {
    local cache=${RR_ROOTFS_CACHE:-/var/cache/region-replicator-test}
    local key tarball mirror tmp started
    key=$(printf '%s %s' "$RR_ROOTFS_SUITE" "$RR_ROOTFS_INCLUDE" | sha256sum | cut -c1-12)
    tarball="$cache/rootfs-$RR_ROOTFS_SUITE-$key.tar"
    if [[ -s "$tarball" ]]; then
        printf '%s\n' "$tarball"
        return 0
    fi
    mirror=$(rr_apt_mirror) || return 1
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/debootstrap.XXXXXX")
    started=$SECONDS
    printf '   debootstrap %s into %s (first run only; mirror from apt sources)\n' "$RR_ROOTFS_SUITE" "$tmp" >&2
    if ! timeout 900 debootstrap --variant=minbase --include="$RR_ROOTFS_INCLUDE" \
        "$RR_ROOTFS_SUITE" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
        tail -n 20 "$tmp/debootstrap.log" >&2
        rm -rf "$tmp"
        printf 'error: debootstrap failed\n' >&2
        return 1
    fi
    # Trim what the tests never need: apt's downloaded archives.
    rm -rf "$tmp/root/var/cache/apt/archives/"*.deb
    tar -C "$tmp/root" -cf "$tmp/rootfs.tar" . && mv "$tmp/rootfs.tar" "$tarball"
    rm -rf "$tmp"
    printf '   debootstrap took %d s; cached as %s\n' "$((SECONDS - started))" "$tarball" >&2
    printf '%s\n' "$tarball"
}
