"""Pure builders: a DistCluster's name, namespace and parsed spec -> the objects it wants.

Like crate-operator's `get_statefulset(...)`, every child object has one public builder
that returns a plain dict, and `desired_objects` lists them in the order they should be
applied (what a pod reads first: the ConfigMap and Redis, then the Services giving the
peers their names, then the StatefulSet and its disruption budget). The kopf handlers
only apply, adopt (owner references) and diff what these return; they add nothing to
the objects, so the tests that validate the builders' output against the Kubernetes
schemas cover what reaches the cluster.

Invariants the handlers and tests rely on:
* Names derive from the resource's name only (`object_names`), so a name that
  `spec.check_name` accepts keeps every derived name within Kubernetes' 63-character
  limits, and the handlers can find every child, even one of a Redis no longer wanted.
* Selectors use `app.kubernetes.io/name`, `app.kubernetes.io/instance` and
  `distcluster.io/workload` (`node` or `redis`), never the role, so the worker selector
  (`selector_string`, the scale subresource's `status.selector`) needs only the name and
  never matches the Redis pod.
* A worker's `NODE_ID` is its pod name, `ADVERTISE_URL` its stable DNS name under the
  headless Service (`$(NODE_ID)` expanded by the kubelet).
* The pod template does not depend on `spec.replicas`, so a resize changes only the
  StatefulSet's `spec.replicas` and never restarts a pod (issue 7). Nothing in it lists the
  pods of the current size: `PEERS` and, for lock_manager, `RAFT_INITIAL_VOTERS` list the
  bootstrap set, the pods `<name>-0 .. <name>-<b-1>` of the size `b` the cluster was
  created with, and the workers learn every other node from Redis (`DISCOVERY=redis`: each
  announces its `ADVERTISE_URL` under the cluster's keys). `RAFT_JOIN=auto` makes a lock
  node outside the bootstrap set with empty storage wait to be added by
  `POST /raft/members`. Queue and cache get the same `PEERS` rather than none: a fresh
  cluster then has the same hash ring on every node from its first second, as before
  discovery, instead of each node owning every topic or key until its first discovery
  round; a listed pod that no longer exists is a dead peer, which the failure detector
  takes off the ring as it would any other.
* The pod template carries a hash of the role settings, so changing a setting rolls the
  StatefulSet although the ConfigMap itself does not restart pods.

The bootstrap size is recorded once, as the annotation `distcluster.io/bootstrap-replicas`
of the StatefulSet (`bootstrap_replicas` reads it back on every pass), and never changes
while the StatefulSet exists: not on a resize, not when the operator restarts (the record
lives in the cluster, not in the operator). A StatefulSet without the record was built
before it existed: its current `spec.replicas` is taken and recorded, since every pod it
has has Raft state already (the template changes once, at that upgrade, to gain the new
variables). Without a StatefulSet the size it is created with is the bootstrap size.

Why a fixed bootstrap set is safe for lock_manager, for instance created at 5, shrunk to
3, grown to 5 again. The bootstrap voters (RAFT_INITIAL_VOTERS, `-0 .. -4`) matter only to
a node whose Raft storage in Redis is empty; a node with state restores its log, whose
configuration entries (or snapshot) override the bootstrap one. The shrink removes `-4`
then `-3` by `DELETE /raft/members` before their pods go (`membership_plan`); the worker
keeps their Raft keys. Grown again, `-3` and `-4` come back as bootstrap voters with their
old logs: at worst their last configuration still lists them as voters (a removed node
usually never receives the entry that removed it), so they campaign, but only with PreVote,
which the members refuse (they hear from their leader, and the returning log is behind
the committed one), so no term moves and no leader is deposed. The planner then adds them
back one at a time with `POST /raft/members`: the leader takes each as a learner, repairs
its log by the usual consistency check (truncating what it had that was never committed)
and promotes it once caught up. A cluster created at 3 and grown to 5 has `-3` and `-4`
outside the bootstrap set: with empty storage they start in join mode and wait for that
POST. What the fixed set cannot cover is an ex-member of the bootstrap set whose Raft keys
were lost while the cluster lives on: it bootstraps an empty log at term 0. Alone it is
harmless (the members refuse its PreVotes: its log is behind theirs, and the planner's
POST then gives it the leader's log), but a majority of the bootstrap set in that state
(created at 5, shrunk to 1, the keys of four ex-members deleted) could elect a leader of
its own. Nothing in DistCluster deletes a node's Raft keys, so that takes losing or
editing the Redis data by hand, which breaks a Raft cluster whatever the template says.

No kopf, no Kubernetes client, no I/O and no clock (enforced by an import-linter contract).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distcluster_operator.spec import ClusterSpec, ManagedRedis, check_name

WORKER_PORT = 8000
REDIS_PORT = 6379
WORKER_UID = 10001  # The `distcluster` user of Dockerfile.node.
REDIS_UID = 999  # The `redis` user of the official redis images.
REDIS_GID = 1000  # Its group in the alpine variant; only used for volume ownership.
TERMINATION_GRACE_SECONDS = 30  # Above the worker's SHUTDOWN_GRACE_MS default of 5 s.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
WORKLOAD_LABEL = "distcluster.io/workload"
SETTINGS_HASH_ANNOTATION = "distcluster.io/settings-hash"
BOOTSTRAP_REPLICAS_ANNOTATION = "distcluster.io/bootstrap-replicas"
APP_NAME = "distcluster"
MANAGER = "distcluster-operator"

Obj = dict[str, Any]


@dataclass(frozen=True)
class ObjectNames:
    """Names of every object a DistCluster may own (all in its namespace)."""

    config_map: str
    redis_service: str
    redis_deployment: str
    redis_pvc: str
    peers_service: str
    client_service: str
    statefulset: str
    pdb: str


def object_names(name: str) -> ObjectNames:
    """The children's names; the StatefulSet takes the resource's own name, so pods are
    `<name>-0`, `<name>-1`, ... and the client Service is reachable as `<name>`."""
    return ObjectNames(
        config_map=f"{name}-settings",
        redis_service=f"{name}-redis",
        redis_deployment=f"{name}-redis",
        redis_pvc=f"{name}-redis-data",
        peers_service=f"{name}-peers",
        client_service=name,
        statefulset=name,
        pdb=name,
    )


def labels(name: str, component: str) -> dict[str, str]:
    """The `app.kubernetes.io/*` labels of every child; component is the role or `redis`."""
    workload = "redis" if component == "redis" else "node"
    return {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGER,
        WORKLOAD_LABEL: workload,
    }


def worker_selector(name: str) -> dict[str, str]:
    """Labels selecting a DistCluster's worker pods (and only those)."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name, WORKLOAD_LABEL: "node"}


def redis_selector(name: str) -> dict[str, str]:
    """Labels selecting a DistCluster's managed Redis pod."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name, WORKLOAD_LABEL: "redis"}


def selector_string(name: str) -> str:
    """The worker selector as a label-selector string, for `status.selector`."""
    return ",".join(f"{key}={value}" for key, value in sorted(worker_selector(name).items()))


def cluster_name(name: str, namespace: str) -> str:
    """The worker's CLUSTER_NAME: the resource's name plus a hash of `namespace/name`.

    Every Redis key is namespaced by CLUSTER_NAME; two DistClusters of the same name in
    two namespaces may share one external Redis, so the name alone is not unique, and
    `<namespace>-<name>` can be ambiguous and too long. At most 52 + 9 characters.
    """
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def pod_address(name: str, namespace: str, pod: str, cluster_domain: str) -> str:
    """`<pod>.<name>-peers.<ns>.svc.<domain>:8000`: a worker's stable DNS name and port."""
    service = object_names(name).peers_service
    return f"{pod}.{service}.{namespace}.svc.{cluster_domain}:{WORKER_PORT}"


def bootstrap_pods(name: str, bootstrap_replicas: int) -> list[str]:
    """The pods of the bootstrap set, `<name>-0 .. <name>-<b-1>`."""
    return [f"{name}-{ordinal}" for ordinal in range(bootstrap_replicas)]


def peers(name: str, namespace: str, bootstrap_replicas: int, cluster_domain: str) -> str:
    """The worker's PEERS: each pod of the bootstrap set as `<pod>=<pod_address>`."""
    return ",".join(
        f"{pod}={pod_address(name, namespace, pod, cluster_domain)}"
        for pod in bootstrap_pods(name, bootstrap_replicas)
    )


def bootstrap_replicas(statefulset: Mapping[str, Any] | None, replicas: int) -> int:
    """The bootstrap size (see the module doc): the StatefulSet's record; else, for a
    StatefulSet built before the record existed, its current `spec.replicas`; else (none
    yet) `replicas`, the size it is about to be created with."""
    if statefulset is None:
        return replicas
    metadata = statefulset.get("metadata") or {}
    recorded = str((metadata.get("annotations") or {}).get(BOOTSTRAP_REPLICAS_ANNOTATION, ""))
    if recorded.isdigit() and int(recorded) >= 1:
        return int(recorded)
    current = (statefulset.get("spec") or {}).get("replicas")
    return current if isinstance(current, int) and current >= 1 else replicas


def settings_hash(spec: ClusterSpec) -> str:
    """A short, stable digest of the role settings (the pod-template annotation)."""
    text = json.dumps(spec.settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _metadata(object_name: str, namespace: str, instance: str, component: str) -> Obj:
    return {"name": object_name, "namespace": namespace, "labels": labels(instance, component)}


def _managed(spec: ClusterSpec) -> ManagedRedis:
    if spec.redis.managed is None:
        raise ValueError("the Redis of this DistCluster is external, not managed")
    return spec.redis.managed


def pod_security_context(uid: int, gid: int) -> Obj:
    """Pod-level hardening: never root, the runtime's default seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(uid: int) -> Obj:
    """Container-level hardening: no privilege escalation, no capabilities, read-only root."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_config_map(name: str, namespace: str, spec: ClusterSpec) -> Obj:
    """The role settings, read by every worker through `envFrom`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(object_names(name).config_map, namespace, name, spec.role),
        "data": dict(sorted(spec.settings.items())),
    }


def build_redis_pvc(name: str, namespace: str, spec: ClusterSpec) -> Obj:
    """The claim holding managed Redis' AOF (only when persistence is enabled)."""
    persistence = _managed(spec).persistence
    claim: Obj = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": persistence.size}},
    }
    if persistence.storage_class_name is not None:
        claim["storageClassName"] = persistence.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(object_names(name).redis_pvc, namespace, name, "redis"),
        "spec": claim,
    }


def build_redis_service(name: str, namespace: str, spec: ClusterSpec) -> Obj:
    """The managed Redis' ClusterIP Service (the workers' REDIS_URL)."""
    _managed(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(object_names(name).redis_service, namespace, name, "redis"),
        "spec": {
            "type": "ClusterIP",
            "selector": redis_selector(name),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
            ],
        },
    }


def build_redis_deployment(name: str, namespace: str, spec: ClusterSpec) -> Obj:
    """One Redis pod with AOF on; `Recreate` so two never write the same volume."""
    redis = _managed(spec)
    names = object_names(name)
    if redis.persistence.enabled:
        data: Obj = {"name": "data", "persistentVolumeClaim": {"claimName": names.redis_pvc}}
    else:
        data = {"name": "data", "emptyDir": {}}
    container = {
        "name": "redis",
        "image": redis.image,
        "imagePullPolicy": "IfNotPresent",
        # `command` replaces the image's entrypoint, which is what turns protected mode
        # off in the official image: without the flag Redis refuses every pod that is not
        # on its loopback. It is reachable only inside the namespace, through its Service.
        "command": ["redis-server"],
        "args": [
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            "/data",
            "--port",
            str(REDIS_PORT),
            "--protected-mode",
            "no",
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "exec": {"command": ["redis-cli", "-p", str(REDIS_PORT), "ping"]},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "redis"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
        "resources": redis.resources.to_k8s(),
        "securityContext": container_security_context(REDIS_UID),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod_labels = labels(name, "redis")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(names.redis_deployment, namespace, name, "redis"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": redis_selector(name)},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(REDIS_UID, REDIS_GID),
                    "containers": [container],
                    "volumes": [data],
                },
            },
        },
    }


def build_peers_service(name: str, namespace: str, spec: ClusterSpec) -> Obj:
    """Headless Service giving every worker pod a stable DNS name, ready or not: a Raft
    candidate must reach its peers before any of them can pass its readiness probe."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(object_names(name).peers_service, namespace, name, spec.role),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": worker_selector(name),
            "ports": [_http_service_port()],
        },
    }


def build_client_service(name: str, namespace: str, spec: ClusterSpec) -> Obj:
    """ClusterIP Service for applications; any ready node accepts any request."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(object_names(name).client_service, namespace, name, spec.role),
        "spec": {
            "type": "ClusterIP",
            "selector": worker_selector(name),
            "ports": [_http_service_port()],
        },
    }


def _http_service_port() -> Obj:
    return {"name": "http", "port": WORKER_PORT, "targetPort": "http", "protocol": "TCP"}


def worker_env(
    name: str,
    namespace: str,
    spec: ClusterSpec,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    bootstrap_replicas: int | None = None,
) -> list[Obj]:
    """The variables the operator sets itself (settings come through `envFrom`); the same
    for every size (see the module doc), the bootstrap size being `spec.replicas` unless
    given. NODE_ID comes before ADVERTISE_URL, which expands it."""
    bootstrap = spec.replicas if bootstrap_replicas is None else bootstrap_replicas
    env: list[Obj] = [
        {"name": "NODE_TYPE", "value": spec.role},
        {"name": "NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "PORT", "value": str(WORKER_PORT)},
        {
            "name": "ADVERTISE_URL",
            "value": f"http://{pod_address(name, namespace, '$(NODE_ID)', cluster_domain)}",
        },
        {"name": "PEERS", "value": peers(name, namespace, bootstrap, cluster_domain)},
        {"name": "DISCOVERY", "value": "redis"},
        {"name": "CLUSTER_NAME", "value": cluster_name(name, namespace)},
    ]
    if spec.role == "lock_manager":
        voters = ",".join(bootstrap_pods(name, bootstrap))
        env.append({"name": "RAFT_INITIAL_VOTERS", "value": voters})
        env.append({"name": "RAFT_JOIN", "value": "auto"})
    external = spec.redis.external
    if external is None:
        host = f"{object_names(name).redis_service}.{namespace}.svc.{cluster_domain}"
        env.append({"name": "REDIS_URL", "value": f"redis://{host}:{REDIS_PORT}/0"})
    else:
        ref = external.url_secret_ref
        secret = {"name": ref.name, "key": ref.key}
        env.append({"name": "REDIS_URL", "valueFrom": {"secretKeyRef": secret}})
    return env


def worker_container(
    name: str,
    namespace: str,
    spec: ClusterSpec,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    bootstrap_replicas: int | None = None,
) -> Obj:
    """The worker container: probes on /ready and /health, read-only root, /tmp writable."""
    container: Obj = {
        "name": "node",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "env": worker_env(name, namespace, spec, cluster_domain, bootstrap_replicas),
        "envFrom": [{"configMapRef": {"name": object_names(name).config_map}}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "securityContext": container_security_context(WORKER_UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    resources = spec.resources.to_k8s()
    if resources:
        container["resources"] = resources
    return container


def default_affinity(name: str) -> Obj:
    """Prefer one worker per node: losing a node then costs a Raft cluster one vote."""
    term = {
        "labelSelector": {"matchLabels": worker_selector(name)},
        "topologyKey": "kubernetes.io/hostname",
    }
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}
            ]
        }
    }


def worker_pod_spec(
    name: str,
    namespace: str,
    spec: ClusterSpec,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    bootstrap_replicas: int | None = None,
) -> Obj:
    """The worker pod spec; the user's affinity replaces the default spreading."""
    pod: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(WORKER_UID, WORKER_UID),
        # A copy: the caller may mutate what it gets back, never the parsed spec.
        "affinity": (
            copy.deepcopy(spec.affinity) if spec.affinity is not None else default_affinity(name)
        ),
        "containers": [worker_container(name, namespace, spec, cluster_domain, bootstrap_replicas)],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [toleration.to_k8s() for toleration in spec.tolerations]
    return pod


def build_statefulset(
    name: str,
    namespace: str,
    spec: ClusterSpec,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    bootstrap_replicas: int | None = None,
) -> Obj:
    """The workers. `Parallel` starts every pod at once, so a Raft majority can form
    (ordered start would wait for pod 0 to be ready, which needs a leader, which needs
    a majority). The bootstrap size (`spec.replicas` unless given) is recorded on it."""
    names = object_names(name)
    bootstrap = spec.replicas if bootstrap_replicas is None else bootstrap_replicas
    metadata = _metadata(names.statefulset, namespace, name, spec.role)
    metadata["annotations"] = {BOOTSTRAP_REPLICAS_ANNOTATION: str(bootstrap)}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "serviceName": names.peers_service,
            "replicas": spec.replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": worker_selector(name)},
            "template": {
                "metadata": {
                    "labels": labels(name, spec.role),
                    "annotations": {SETTINGS_HASH_ANNOTATION: settings_hash(spec)},
                },
                "spec": worker_pod_spec(name, namespace, spec, cluster_domain, bootstrap),
            },
        },
    }


def build_pdb(name: str, namespace: str, spec: ClusterSpec) -> Obj:
    """At most one worker voluntarily evicted at a time. Unhealthy pods may always be
    evicted, so a crash-looping pod never blocks a node drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(object_names(name).pdb, namespace, name, spec.role),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": worker_selector(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def desired_objects(
    name: str,
    namespace: str,
    spec: ClusterSpec,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    bootstrap_replicas: int | None = None,
) -> list[Obj]:
    """Every object the DistCluster `namespace/name` wants, in apply order.

    ConfigMap; with managed Redis its PVC (when persistent), Service and Deployment;
    headless peers Service; client Service; StatefulSet; PodDisruptionBudget. No owner
    references: the handler adopts them. `bootstrap_replicas` is the recorded bootstrap
    size (`bootstrap_replicas()`; None for a cluster created now, `spec.replicas`).
    Raises SpecError for a name `check_name` refuses.
    """
    check_name(name)
    objects = [build_config_map(name, namespace, spec)]
    redis = spec.redis.managed
    if redis is not None:
        if redis.persistence.enabled:
            objects.append(build_redis_pvc(name, namespace, spec))
        objects.append(build_redis_service(name, namespace, spec))
        objects.append(build_redis_deployment(name, namespace, spec))
    objects.append(build_peers_service(name, namespace, spec))
    objects.append(build_client_service(name, namespace, spec))
    objects.append(build_statefulset(name, namespace, spec, cluster_domain, bootstrap_replicas))
    objects.append(build_pdb(name, namespace, spec))
    return objects
