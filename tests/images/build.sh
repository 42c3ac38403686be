#!/usr/bin/env bash
# Build every image the container tests need on the private engine of tests/services/docker.sh,
# with no registry: a Debian 12 base from debootstrap (`docker import`), then with
# `docker build --network host` (Debian and PyPI packages come from their registries):
#
#   kidneyct-test/debian:bookworm   debootstrap minbase; built only when missing
#   kidneyct-test/python:3.11       stand-in for python:3.11-slim            (tests/images/python)
#   kidneyct-test/kafka:3.9.1       stand-in for apache/kafka:3.9.1           (tests/images/kafka)
#   kidneyct-test/postgres:15       stand-in for postgres:16                  (tests/images/postgres)
#   kidneyct-test/seaweedfs:4       stand-in for minio/minio (S3 on :9000)    (tests/images/seaweedfs)
#   kidneyct:latest                 the real Dockerfile, BASE_IMAGE=kidneyct-test/python:3.11, EXTRAS=cpu
#
#   tests/images/build.sh [all|services|debian|python|kafka|postgres|seaweedfs|kidneyct]...   (default: all)
#
# Docker's layer cache makes a second run quick (seconds) until a Dockerfile, a jar or the code changes.
# Environment: as tests/services/docker.sh (the engine must be started), KIDNEYCT_DEBIAN_MIRROR
# (default http://deb.debian.org/debian).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SERVICES_DIR="${KIDNEYCT_SERVICES_DIR:-$REPO/.services}"
WORK="${KIDNEYCT_DOCKER_DIR:-$SERVICES_DIR/docker}/build"
MIRROR="${KIDNEYCT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_IMAGE=kidneyct-test/debian:bookworm
PYTHON_IMAGE=kidneyct-test/python:3.11
KAFKA_IMAGE=kidneyct-test/kafka:3.9.1
POSTGRES_IMAGE=kidneyct-test/postgres:15
SEAWEEDFS_IMAGE=kidneyct-test/seaweedfs:4
KIDNEYCT_IMAGE=kidneyct:latest

DOCKER_HOST="$(bash "$REPO/tests/services/docker.sh" host)"
export DOCKER_HOST
# Debian's CLI, the same release as its daemon; its classic builder needs no buildx plugin.
DOCKER=(/usr/bin/docker)
export DOCKER_BUILDKIT=0

say() { echo "build.sh: $*" >&2; }

timed() {
    local name="$1" start=$SECONDS
    shift
    "$@"
    say "$name ready in $((SECONDS - start))s"
}

have_image() { "${DOCKER[@]}" image inspect "$1" >/dev/null 2>&1; }

build() {
    local tag="$1"
    shift
    "${DOCKER[@]}" build --network host --quiet --tag "$tag" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" "$@" >/dev/null
}

debian() {
    if have_image "$DEBIAN_IMAGE"; then
        return 0
    fi
    command -v debootstrap >/dev/null || bash "$REPO/tests/services/docker.sh" install
    local root="$WORK/debian-rootfs"
    rm -rf "$root"
    mkdir -p "$WORK"
    say "debootstrap bookworm from $MIRROR (once; the image is kept in the engine)"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { say "debootstrap failed:"; tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
    # The same Debian sources, apt settings and extra CAs as this machine, so builds reach the same
    # registries the same way.
    local sources
    for sources in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [[ -f "$sources" ]] || continue
        rm -f "$root/etc/apt/sources.list"  # debootstrap's, replaced by the machine's
        cp "$sources" "$root$sources"
    done
    cp -a /etc/apt/apt.conf.d/. "$root/etc/apt/apt.conf.d/"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    tar -C "$root" --numeric-owner -c . \
        | "${DOCKER[@]}" import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$root"
}

python() { build "$PYTHON_IMAGE" "$HERE/python"; }

kafka() {
    local libs context="$WORK/kafka-context"
    libs="$(bash "$REPO/tests/services/kafka.sh" libs)"
    rm -rf "$context"
    mkdir -p "$context"
    cp -a "$HERE/kafka/." "$context/"
    # Hard links when the jars are on the same file system: the context costs no copy.
    cp -rl "$libs" "$context/libs" 2>/dev/null || cp -r "$libs" "$context/libs"
    rm -f "$context/libs/.complete"
    build "$KAFKA_IMAGE" "$context"
}

postgres() { build "$POSTGRES_IMAGE" "$HERE/postgres"; }

seaweedfs() {
    have_image "$PYTHON_IMAGE" || python
    build "$SEAWEEDFS_IMAGE" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" "$HERE/seaweedfs"
}

kidneyct() {
    have_image "$PYTHON_IMAGE" || python
    # The real Dockerfile and build context; only the base image is the local stand-in.
    build "$KIDNEYCT_IMAGE" --build-arg "BASE_IMAGE=$PYTHON_IMAGE" --build-arg EXTRAS=cpu "$REPO"
}

targets=("$@")
((${#targets[@]})) || targets=(all)
for target in "${targets[@]}"; do
    case "$target" in
    all) timed debian debian; timed python python; timed kafka kafka; timed postgres postgres; timed seaweedfs seaweedfs; timed kidneyct kidneyct ;;
    services) timed debian debian; timed kafka kafka; timed postgres postgres ;;
    debian | python | kafka | postgres | seaweedfs)
        [[ "$target" == debian ]] || have_image "$DEBIAN_IMAGE" || timed debian debian
        timed "$target" "$target"
        ;;
    kidneyct) have_image "$DEBIAN_IMAGE" || timed debian debian; timed kidneyct kidneyct ;;
    *)
        echo "usage: $0 [all|services|debian|python|kafka|postgres|seaweedfs|kidneyct]..." >&2
        exit 2
        ;;
    esac
done
