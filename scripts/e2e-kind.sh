#!/usr/bin/env bash
# `make e2e-kind`: the operator end to end on a throwaway kind cluster.
#
# Creates a kind cluster, builds the node and operator images from Dockerfile.node and
# loads them into it, installs the operator with its Helm chart, then for each sample
# DistCluster (lock_manager, queue, cache): applies it, waits for condition Ready,
# exercises the role's API through a port-forward across a pod deletion, scales it up
# and back down (no existing pod may restart; lock_manager voters follow), deletes it and
# checks that every child is gone. Finally uninstalls the chart and
# deletes the kind cluster (also when a step fails; KEEP_CLUSTER=1 keeps it to debug).
#
#   BASE_IMAGE        base of both images (default: Dockerfile.node's public slim image)
#   KIND_CLUSTER      kind cluster name (default distcluster-e2e)
#   NODE_IMAGE        node image tag (default distcluster/node:0.1.0)
#   OPERATOR_IMAGE    operator image tag (default distcluster/operator:0.1.0)
#   REDIS_IMAGE       Redis image for the managed Redis, loaded into kind when it exists
#                     locally (default redis:7-alpine, pulled by the kind node otherwise)
#   KEEP_CLUSTER=1    leave the kind cluster running at the end
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${KIND_CLUSTER:-distcluster-e2e}"
node_image="${NODE_IMAGE:-distcluster/node:0.1.0}"
operator_image="${OPERATOR_IMAGE:-distcluster/operator:0.1.0}"
redis_image="${REDIS_IMAGE:-redis:7-alpine}"
namespace="distcluster-e2e"
operator_namespace="distcluster-system"
release="distcluster"
local_port=18080
port_forward_pid=""

say() { echo "e2e-kind: $*"; }
die() { echo "e2e-kind: $*" >&2; exit 1; }

for tool in docker kind kubectl helm curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed: this script needs docker, kind, kubectl, helm, curl and python3"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers: start dockerd (or Docker Desktop) and retry"

cleanup() {
    local status=$?
    stop_port_forward
    if [ "$status" -ne 0 ]; then
        say "failed; operator log tail:"
        kubectl -n "$operator_namespace" logs -l "app.kubernetes.io/instance=$release" --tail=60 2>/dev/null || true
        kubectl -n "$namespace" get all,distclusters 2>/dev/null || true
    fi
    if [ -n "${KEEP_CLUSTER:-}" ]; then
        say "KEEP_CLUSTER set: kind cluster $cluster left running"
    else
        helm uninstall "$release" -n "$operator_namespace" >/dev/null 2>&1 || true
        kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT

# JSON field of stdin, by a dotted path ("holders.0.token"); empty when absent.
json_get() {
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for part in sys.argv[1].split("."):
    if isinstance(value, list):
        value = value[int(part)] if int(part) < len(value) else None
    elif isinstance(value, dict):
        value = value.get(part)
    if value is None:
        break
print("" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else value))
' "$1"
}

# Retry a command until it succeeds, at most $1 seconds.
retry() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 2
    done
}

stop_port_forward() {
    if [ -n "$port_forward_pid" ]; then
        kill "$port_forward_pid" >/dev/null 2>&1 || true
        wait "$port_forward_pid" 2>/dev/null || true
        port_forward_pid=""
    fi
}

# Port-forward the DistCluster's client Service (named like the resource) to local_port.
port_forward() {
    stop_port_forward
    kubectl -n "$namespace" port-forward "svc/$1" "$local_port:8000" >/dev/null 2>&1 &
    port_forward_pid=$!
    retry 30 curl -fsS -o /dev/null "http://127.0.0.1:$local_port/health" \
        || die "port-forward to svc/$1 does not answer"
}

api() { # METHOD PATH [JSON]
    if [ $# -ge 3 ]; then
        curl -sS -X "$1" -H 'Content-Type: application/json' -d "$3" "http://127.0.0.1:$local_port$2"
    else
        curl -sS -X "$1" "http://127.0.0.1:$local_port$2"
    fi
}

wait_ready() { # NAME
    kubectl -n "$namespace" wait "distcluster/$1" --for=condition=Ready --timeout=240s
}

# A pod deletion changes which pod the port-forward reaches: reconnect after it.
delete_pod_and_wait() { # POD NAME
    kubectl -n "$namespace" delete pod "$1" --wait=true
    kubectl -n "$namespace" rollout status "statefulset/$2" --timeout=240s
    wait_ready "$2"
    port_forward "$2"
}

children_gone() { # NAME
    local left
    left="$(kubectl -n "$namespace" get statefulsets,services,configmaps,deployments,poddisruptionbudgets,persistentvolumeclaims \
        -l "app.kubernetes.io/instance=$1" -o name 2>/dev/null)"
    [ -z "$left" ]
}

# --- cluster, images, operator ----------------------------------------------------------

say "creating kind cluster $cluster"
kind create cluster --name "$cluster" --wait 120s

build_args=()
if [ -n "${BASE_IMAGE:-}" ]; then
    build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
say "building $node_image and $operator_image"
docker build -q -f Dockerfile.node --target node "${build_args[@]}" -t "$node_image" . >/dev/null
docker build -q -f Dockerfile.node --target operator "${build_args[@]}" -t "$operator_image" . >/dev/null
kind load docker-image --name "$cluster" "$node_image" "$operator_image"
if docker image inspect "$redis_image" >/dev/null 2>&1; then
    kind load docker-image --name "$cluster" "$redis_image"
fi

say "installing the operator chart"
helm install "$release" helm/distcluster-operator \
    --namespace "$operator_namespace" --create-namespace \
    --set image.repository="${operator_image%:*}" --set image.tag="${operator_image##*:}" \
    --set image.pullPolicy=IfNotPresent --wait --timeout 180s
kubectl create namespace "$namespace"

apply_sample() { # FILE NAME
    sed -e "s|^  role:|  image: $node_image\n  imagePullPolicy: IfNotPresent\n  role:|" "$1" \
        | kubectl -n "$namespace" apply -f -
    if [ "$redis_image" != "redis:7-alpine" ]; then
        kubectl -n "$namespace" patch distcluster "$2" --type merge \
            -p "{\"spec\":{\"redis\":{\"managed\":{\"image\":\"$redis_image\"}}}}"
    fi
    wait_ready "$2"
    port_forward "$2"
}

ready_replicas() { # NAME COUNT
    retry 240 test "$(kubectl -n "$namespace" get statefulset "$1" -o jsonpath='{.status.readyReplicas}')" = "$2" \
        || die "$1 did not reach $2 ready replicas"
    wait_ready "$1"
    [ "$(kubectl -n "$namespace" get distcluster "$1" -o jsonpath='{.status.readyReplicas}')" = "$2" ] \
        || die "$1 status does not show $2 ready replicas"
}

pod_uids() { # NAME: "name=uid" of the pods of the first ordinals, sorted
    kubectl -n "$namespace" get pods -l "app.kubernetes.io/instance=$1,distcluster.io/workload=node" \
        -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}' | sort
}

voters() { # the number of Raft voters a lock_manager reports
    api GET /raft/members | json_get voters | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

# Scale up and back down through the scale subresource (kubectl scale), then delete.
# A resize changes only the StatefulSet's replicas: the pods that were there before are
# the same pods afterwards (same UIDs, never restarted); for a lock_manager the Raft
# voters follow (added after the new pods start, removed before their pods go).
scale_and_delete() { # NAME REPLICAS_UP REPLICAS_DOWN
    local before after
    before="$(pod_uids "$1")"
    kubectl -n "$namespace" scale "distcluster/$1" --replicas="$2"
    ready_replicas "$1" "$2"
    if [ "$1" = locks ]; then
        retry 120 test "$(voters)" = "$2" || die "locks: $(voters) voters after scaling to $2"
    fi
    kubectl -n "$namespace" scale "distcluster/$1" --replicas="$3"
    retry 240 test "$(kubectl -n "$namespace" get statefulset "$1" -o jsonpath='{.status.replicas}')" = "$3" \
        || die "$1 did not shrink to $3 replicas"
    ready_replicas "$1" "$3"
    if [ "$1" = locks ]; then
        retry 120 test "$(voters)" = "$3" || die "locks: $(voters) voters after scaling to $3"
    fi
    after="$(pod_uids "$1")"
    [ "$before" = "$after" ] || die "$1: pods were recreated by the resize:
before: $before
after:  $after"
    stop_port_forward
    kubectl -n "$namespace" delete distcluster "$1" --wait=true
    retry 120 children_gone "$1" || die "children of $1 are left after its deletion"
    say "$1: scaled to $2 and back to $3 without restarting a pod, deleted, every child gone"
}

# --- lock_manager: a lock and its token survive the deletion of the leader's pod -------------

say "lock_manager"
apply_sample manifests/samples/lock-manager.yaml locks
leader="$(kubectl -n "$namespace" get distcluster locks -o jsonpath='{.status.leader}')"
[ -n "$leader" ] || die "status.leader is empty on a Ready lock_manager"
grant="$(api POST /lock/acquire '{"resource":"e2e","owner":"kind","mode":"exclusive","ttl_ms":300000}')"
token="$(echo "$grant" | json_get token)"
[ -n "$token" ] || die "acquire failed: $grant"
delete_pod_and_wait "$leader" locks
retry 60 sh -c "curl -fsS http://127.0.0.1:$local_port/lock/e2e | grep -q '\"token\":$token'" \
    || die "the lock or its token was lost with the leader's pod"
refused="$(api POST /lock/acquire '{"resource":"e2e","owner":"other","mode":"exclusive","wait_ms":0}')"
[ "$(echo "$refused" | json_get error.code)" = "locked" ] || die "a held lock was granted again: $refused"
new_leader="$(kubectl -n "$namespace" get distcluster locks -o jsonpath='{.status.leader}')"
say "locks: token $token survived the deletion of $leader (leader now $new_leader)"
scale_and_delete locks 5 3

# --- queue: nothing acknowledged is lost across the deletion of the topic owner's pod --------

say "queue"
apply_sample manifests/samples/queue.yaml queue
owner="$(api GET '/ring?topic=e2e' | json_get owner)"
[ -n "$owner" ] || die "no owner for topic e2e"
for batch in $(seq 1 10); do
    reply="$(api POST /queue/publish "{\"topic\":\"e2e\",\"messages\":[{\"b\":$batch,\"n\":1},{\"b\":$batch,\"n\":2}],\"idempotency_key\":\"b$batch\"}")"
    [ "$(echo "$reply" | json_get ids | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 2 ] \
        || die "publish failed: $reply"
done
delete_pod_and_wait "$owner" queue
got=0
deadline=$((SECONDS + 120))
while [ "$got" -lt 20 ] && [ "$SECONDS" -lt "$deadline" ]; do
    batch="$(api POST /queue/consume '{"topic":"e2e","group":"kind","consumer":"c1","max":100,"block_ms":500}')"
    ids="$(echo "$batch" | python3 -c 'import json,sys; print(json.dumps([m["id"] for m in json.load(sys.stdin).get("messages", [])]))' 2>/dev/null || echo '[]')"
    if [ "$ids" != "[]" ]; then
        api POST /queue/ack "{\"topic\":\"e2e\",\"group\":\"kind\",\"ids\":$ids}" >/dev/null
        got=$((got + $(echo "$ids" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')))
    fi
done
[ "$got" -ge 20 ] || die "consumed $got of 20 acknowledged messages after the owner's pod was deleted"
say "queue: all 20 acknowledged messages consumed after the deletion of $owner"
scale_and_delete queue 5 3

# --- cache: a write through one pod is seen through every pod -------------------------------

say "cache"
apply_sample manifests/samples/cache.yaml cache
api PUT /cache/user:1 '{"value":"v1"}' >/dev/null
api PUT /cache/user:1 '{"value":"v2"}' | grep -q '"v2"' || die "PUT failed"
for pod in $(kubectl -n "$namespace" get pods -l app.kubernetes.io/instance=cache,distcluster.io/workload=node -o name); do
    value="$(kubectl -n "$namespace" exec "${pod#pod/}" -- python -c \
        'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8000/cache/user:1").read().decode())' \
        | json_get value)"
    [ "$value" = "v2" ] || die "${pod#pod/} serves '$value' after a PUT of v2"
done
say "cache: every pod serves the latest value"
scale_and_delete cache 5 3

say "all scenarios passed"
