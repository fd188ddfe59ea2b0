#!/usr/bin/env bash
# `make e2e`: build the node and operator images, then run the docker compose scenarios of tests/e2e
# (lock_manager, queue, cache, one compose project each, always taken down with -v).
#
#   BASE_IMAGE   base of the node image (default: Dockerfile.node's public slim image;
#                offline: distcluster-base:bookworm from docker/build-base-image.sh)
#   REDIS_IMAGE  Redis image for the scenarios (default redis:7-bookworm; offline: the
#                local base image, which carries redis-server)
#   NODE_IMAGE   tag of the built node image (default distcluster/node:0.1.0)
#   OPERATOR_IMAGE  tag of the built operator image (default distcluster/operator:0.1.0)
#   COMPOSE      compose CLI ("docker compose" or "docker-compose"; default: v2 if present)
#   PYTEST_ADDOPTS  extra pytest arguments, read by pytest itself (e.g. "-k lock -x")
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "e2e: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed: the e2e scenarios need a Docker engine (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers at ${DOCKER_HOST:-the default socket}: start dockerd (or Docker Desktop) and retry"
if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then
        COMPOSE="docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE="docker-compose"
    else
        die "neither 'docker compose' nor 'docker-compose' is installed"
    fi
fi
export COMPOSE

node_image="${NODE_IMAGE:-distcluster/node:0.1.0}"
operator_image="${OPERATOR_IMAGE:-distcluster/operator:0.1.0}"
build_args=(--build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
            --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
if [ -n "${BASE_IMAGE:-}" ]; then
    build_args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
fi
echo "e2e: building ${node_image} and ${operator_image} (${BASE_IMAGE:-default base image}), compose: ${COMPOSE}"
for target in node operator; do
    image="${node_image}"
    [ "$target" = operator ] && image="${operator_image}"
    docker build --quiet -f Dockerfile.node --target "$target" "${build_args[@]}" -t "$image" . >/dev/null
    size="$(docker image inspect -f '{{.Size}}' "$image")"
    echo "e2e: ${image} is $((size / 1000000)) MB"
done

export DISTCLUSTER_E2E=1 E2E_IMAGE="${node_image}" E2E_OPERATOR_IMAGE="${operator_image}" \
    E2E_REDIS_IMAGE="${REDIS_IMAGE:-redis:7-bookworm}"
exec .venv/bin/python -m pytest tests/e2e -p no:cacheprovider
