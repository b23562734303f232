#!/usr/bin/env bash
# Podman on this host, for building and running the image without Docker or a registry
# (mk/container.mk; docker/README.md says why each step is needed).
#
#   docker/podman.sh unsupported     print why podman cannot be used here (nothing when it can)
#   docker/podman.sh install         apt-get install podman runc debootstrap, when one is missing
#   docker/podman.sh base DIR        print the name of a local Debian 12 base image, making it first
#                                    when it is not there: debootstrap --variant=minbase bookworm,
#                                    kept as DIR/bookworm-minbase.tar, `podman import`ed
#
# Podman runs with docker/containers.conf (CONTAINERS_CONF), so nothing in /etc is changed.
# DEBIAN_MIRROR (default http://deb.debian.org/debian) is where debootstrap and, inside the
# build, apt get Debian's packages.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}
BASE_IMAGE=localhost/tinyserve-base:bookworm-minbase
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=(podman runc debootstrap)

unsupported() {
    if [ "$(uname -s)" != Linux ]; then
        echo "podman builds and runs the image here only on Linux (this is $(uname -s)): build with docker, see docker/README.md"
    elif [ "$(id -u)" != 0 ]; then
        echo "the container test runs podman as root (rootful: runc, cgroupfs, host ports) and this is uid $(id -u)"
    elif ! missing_packages >/dev/null && ! command -v apt-get >/dev/null; then
        echo "podman, runc or debootstrap is missing and there is no apt-get to install them"
    fi
}

missing_packages() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    [ ${#missing[@]} -gt 0 ] && echo "${missing[*]}"
}

install() {
    local missing
    missing=$(missing_packages) || return 0
    echo "podman.sh: installing ${PACKAGES[*]} (missing: $missing)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null; } \
        || { echo "podman.sh: could not install ${PACKAGES[*]} with apt-get" >&2; return 1; }
}

base() {
    local dir=${1:?usage: podman.sh base DIR}
    local tarball=$dir/bookworm-minbase.tar
    if podman image exists "$BASE_IMAGE"; then
        echo "$BASE_IMAGE"
        return 0
    fi
    mkdir -p "$dir"
    if [ ! -s "$tarball" ]; then
        local rootfs=$dir/rootfs.tmp
        rm -rf "$rootfs"
        echo "podman.sh: no registry needed: debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR" >&2
        PATH=$PATH:/usr/sbin:/sbin debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$dir/debootstrap.log" 2>&1 \
            || { tail -20 "$dir/debootstrap.log" >&2; echo "podman.sh: debootstrap failed (log: $dir/debootstrap.log)" >&2; return 1; }
        # debootstrap leaves the .debs it installed in the rootfs' apt cache
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar --numeric-owner -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    fi
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
    echo "$BASE_IMAGE"
}

case "${1:-}" in
    unsupported) unsupported ;;
    install) install ;;
    base) shift; base "$@" ;;
    *) echo "usage: $0 unsupported | install | base DIR" >&2; exit 2 ;;
esac
