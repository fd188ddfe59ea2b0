#!/usr/bin/env bash
# Build a local Debian base image for Dockerfile.node, with no image registry needed.
#
# Why: where no registry can be reached (CI, air-gapped hosts) `FROM python:3.11-slim`
# cannot be pulled. This script bootstraps a minimal Debian (debootstrap --variant=minbase)
# with python3 and redis-server from the Debian mirror, trusts the host's CA bundle so pip
# inside `docker build` can reach the package index through the host's TLS setup, and
# imports the tree as an image:
#
#   docker/build-base-image.sh [IMAGE]        (default distcluster-base:bookworm)
#   make e2e BASE_IMAGE=distcluster-base:bookworm
#
# The same image also serves as the Redis image of the compose file (REDIS_IMAGE), since
# it carries Debian's redis-server and redis-cli.
set -euo pipefail

image="${1:-distcluster-base:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
host_ca="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

die() { echo "build-base-image: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root; run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
command -v docker >/dev/null || die "docker is missing (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"

if docker image inspect "$image" >/dev/null 2>&1 && [ -z "${REBUILD:-}" ]; then
    echo "build-base-image: $image exists (REBUILD=1 to build it again)"
    exit 0
fi

root="$(mktemp -d /var/tmp/distcluster-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT

echo "build-base-image: debootstrap $suite from $mirror (a few minutes)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,redis-server,redis-tools \
    "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log" >&2; die "debootstrap failed (log above)"; }
rm -f "$root.log"

# Trust what the host trusts: where TLS to the package index goes through a proxy with
# its own CA, pip in the build then works exactly as it does on the host.
if [ -f "$host_ca" ]; then
    cp "$host_ca" "$root/etc/ssl/certs/host-ca-bundle.crt"
else
    cp "$root/etc/ssl/certs/ca-certificates.crt" "$root/etc/ssl/certs/host-ca-bundle.crt"
fi

# Keep the image small: no package lists, caches, documentation or locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/tmp/*

tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'CMD ["/bin/bash"]' \
    - "$image" >/dev/null
echo "build-base-image: built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
