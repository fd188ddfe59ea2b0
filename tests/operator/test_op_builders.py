"""Builders: every object valid Kubernetes, and the wiring between them as the workers need it.

The worker's own configuration loader reads the environment the StatefulSet gives a pod,
so a renamed variable or a PEERS syntax the worker cannot parse fails here, not in a
cluster.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import kubernetes_validate
import pytest
from op_cases import CASES, objects_by_kind
from op_kube import validate_k8s

from distcluster_operator import crd
from distcluster_operator.builders import (
    BOOTSTRAP_REPLICAS_ANNOTATION,
    bootstrap_replicas,
    build_statefulset,
    cluster_name,
    desired_objects,
    object_names,
    selector_string,
)
from distcluster_operator.kube import field_hashes
from distcluster_operator.spec import ClusterSpec, SpecError, parse_spec
from distcluster_worker.cache_role.settings import load_cache_settings
from distcluster_worker.lock_role.settings import LockRoleSettings, load_lock_settings
from distcluster_worker.queue_role.settings import load_queue_settings
from distcluster_worker.shell.config import CLUSTER_NAME_RE, Settings, load_settings

NS = "apps"
# Worker settings of the discovery contract (DISCOVERY, ADVERTISE_URL, RAFT_JOIN=auto) that
# land on main with the worker's discovery change, not yet in this tree's Settings.
CONTRACT_SETTINGS = {"ADVERTISE_URL", "DISCOVERY"}
WORKER_SETTINGS = (
    {field.upper() for field in Settings.model_fields}
    | {f"RAFT_{field.upper()}" for field in LockRoleSettings.model_fields}
    | CONTRACT_SETTINGS
)


def container(sts: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = sts["spec"]["template"]["spec"]["containers"]
    (only,) = containers
    return only


def pod_env(
    name: str, ordinal: int, spec: ClusterSpec, bootstrap_replicas: int | None = None
) -> dict[str, str]:
    """The environment a worker pod sees: env (fieldRef and secretKeyRef resolved, `$(..)`
    expanded the way the kubelet would) over the ConfigMap's settings (envFrom)."""
    objects = desired_objects(name, NS, spec, bootstrap_replicas=bootstrap_replicas)
    (config_map,) = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    (sts,) = [obj for obj in objects if obj["kind"] == "StatefulSet"]
    env = dict(config_map["data"])
    for var in container(sts)["env"]:
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = f"{name}-{ordinal}"
        else:
            env[var["name"]] = "redis://external.example:6379/0"
    return env


def expand(value: str, env: dict[str, str]) -> str:
    """`$(NAME)` replaced by a variable defined before, as the kubelet does."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def worker_env(sts: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container(sts)["env"]}


def test_every_object_is_valid_kubernetes(case: tuple[str, ClusterSpec]) -> None:
    _, spec = case
    objects = desired_objects("demo", NS, spec)
    assert objects
    for obj in objects:
        validate_k8s(obj)


def test_validation_is_strict_so_it_can_fail() -> None:
    sts = build_statefulset("demo", NS, parse_spec({"role": "queue"}))
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(sts)


def test_apply_order_with_managed_redis() -> None:
    kinds = [
        (o["kind"], o["metadata"]["name"])
        for o in desired_objects("locks", NS, parse_spec(CASES["lock_manager"]))
    ]
    assert kinds == [
        ("ConfigMap", "locks-settings"),
        ("Service", "locks-redis"),
        ("Deployment", "locks-redis"),
        ("Service", "locks-peers"),
        ("Service", "locks"),
        ("StatefulSet", "locks"),
        ("PodDisruptionBudget", "locks"),
    ]


def test_persistence_adds_a_claim_before_the_redis_deployment() -> None:
    objects = desired_objects("locks", NS, parse_spec(CASES["persistent_redis"]))
    kinds = [o["kind"] for o in objects]
    assert kinds[:4] == ["ConfigMap", "PersistentVolumeClaim", "Service", "Deployment"]
    claim = objects[1]
    assert claim["metadata"]["name"] == "locks-redis-data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "fast-ssd",
    }
    volumes = objects[3]["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "data", "persistentVolumeClaim": {"claimName": "locks-redis-data"}}]


def test_external_redis_builds_no_redis_and_reads_the_url_from_the_secret() -> None:
    spec = parse_spec(CASES["external_redis"])
    grouped = objects_by_kind("jobs", NS, spec)
    assert "Deployment" not in grouped and "PersistentVolumeClaim" not in grouped
    assert [s["metadata"]["name"] for s in grouped["Service"]] == ["jobs-peers", "jobs"]
    env = {v["name"]: v for v in container(grouped["StatefulSet"][0])["env"]}
    assert env["REDIS_URL"] == {
        "name": "REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "queue-redis", "key": "redis-url"}},
    }


def test_managed_redis_runs_with_aof_on_an_empty_dir_by_default() -> None:
    grouped = objects_by_kind("locks", NS, parse_spec(CASES["lock_manager"]))
    (deployment,) = grouped["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (redis,) = pod["containers"]
    assert redis["image"] == crd.DEFAULT_REDIS_IMAGE
    assert redis["args"][:2] == ["--appendonly", "yes"]
    # The entrypoint that disables protected mode is replaced by `command`: without this
    # flag Redis would refuse the worker pods.
    assert redis["args"][-2:] == ["--protected-mode", "no"]
    assert redis["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert pod["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert redis["resources"] == crd.DEFAULT_REDIS_RESOURCES
    assert redis["securityContext"]["readOnlyRootFilesystem"] is True


def test_worker_env_uses_the_workers_own_variable_names() -> None:
    sts = build_statefulset("locks", NS, parse_spec(CASES["lock_manager"]))
    names = [var["name"] for var in container(sts)["env"]]
    assert set(names) == {
        "NODE_TYPE",
        "NODE_ID",
        "HOST",
        "PORT",
        "ADVERTISE_URL",
        "PEERS",
        "DISCOVERY",
        "CLUSTER_NAME",
        "RAFT_INITIAL_VOTERS",
        "RAFT_JOIN",
        "REDIS_URL",
    }
    assert names.index("NODE_ID") < names.index("ADVERTISE_URL")  # the kubelet expands in order
    assert set(names) <= WORKER_SETTINGS
    assert set(crd.RESERVED_SETTINGS) == set(names)
    queue = build_statefulset("jobs", NS, parse_spec(CASES["queue"]))
    assert set(worker_env(queue)) == set(names) - {"RAFT_INITIAL_VOTERS", "RAFT_JOIN"}


def test_worker_env_values() -> None:
    sts = build_statefulset("locks", NS, parse_spec(CASES["lock_manager"]))
    env = {var["name"]: var for var in container(sts)["env"]}
    assert env["NODE_TYPE"]["value"] == "lock_manager"
    assert env["NODE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["PORT"]["value"] == "8000"
    assert env["HOST"]["value"] == "0.0.0.0"
    assert env["REDIS_URL"]["value"] == "redis://locks-redis.apps.svc.cluster.local:6379/0"
    assert env["ADVERTISE_URL"]["value"] == (
        "http://$(NODE_ID).locks-peers.apps.svc.cluster.local:8000"
    )
    assert env["DISCOVERY"]["value"] == "redis"
    assert env["PEERS"]["value"] == (
        "locks-0=locks-0.locks-peers.apps.svc.cluster.local:8000,"
        "locks-1=locks-1.locks-peers.apps.svc.cluster.local:8000,"
        "locks-2=locks-2.locks-peers.apps.svc.cluster.local:8000"
    )
    assert env["RAFT_INITIAL_VOTERS"]["value"] == "locks-0,locks-1,locks-2"
    assert env["RAFT_JOIN"]["value"] == "auto"
    assert sts["metadata"]["annotations"] == {BOOTSTRAP_REPLICAS_ANNOTATION: "3"}
    assert container(sts)["envFrom"] == [{"configMapRef": {"name": "locks-settings"}}]


def test_the_bootstrap_set_and_cluster_domain_shape_peers() -> None:
    spec = parse_spec(CASES["five_replicas"])
    sts = desired_objects("locks", NS, spec, cluster_domain="corp.internal")[-2]
    env = worker_env(sts)
    peers = env["PEERS"].split(",")
    assert len(peers) == 5
    assert peers[4] == "locks-4=locks-4.locks-peers.apps.svc.corp.internal:8000"
    assert env["ADVERTISE_URL"] == "http://$(NODE_ID).locks-peers.apps.svc.corp.internal:8000"
    created_at_3 = desired_objects("locks", NS, spec, bootstrap_replicas=3)[-2]
    assert created_at_3["spec"]["replicas"] == 5
    assert worker_env(created_at_3)["RAFT_INITIAL_VOTERS"] == "locks-0,locks-1,locks-2"
    assert worker_env(created_at_3)["PEERS"].count("=locks-") == 3
    assert created_at_3["metadata"]["annotations"][BOOTSTRAP_REPLICAS_ANNOTATION] == "3"


def test_the_pod_template_is_the_same_for_every_size(case: tuple[str, ClusterSpec]) -> None:
    _, spec = case
    templates = set()
    template_hashes = set()
    for replicas in (1, 3, 5, 7):
        sized = spec.model_copy(update={"replicas": replicas})
        sts = build_statefulset("demo", NS, sized, bootstrap_replicas=3)
        assert sts["spec"]["replicas"] == replicas
        templates.add(json.dumps(sts["spec"]["template"], sort_keys=True))
        template_hashes.add(field_hashes(sts)["/spec/template"])
    assert len(templates) == 1
    assert len(template_hashes) == 1


def test_the_bootstrap_size_is_recorded_once() -> None:
    spec = parse_spec(CASES["lock_manager"])
    assert bootstrap_replicas(None, 5) == 5  # created now, at 5
    created = build_statefulset("locks", NS, spec, bootstrap_replicas=bootstrap_replicas(None, 3))
    grown = copy.deepcopy(created)
    grown["spec"]["replicas"] = 7
    assert bootstrap_replicas(created, 5) == 3
    assert bootstrap_replicas(grown, 1) == 3
    # Built before the record existed: the pods it has now are the bootstrap set.
    legacy = copy.deepcopy(grown)
    del legacy["metadata"]["annotations"]
    assert bootstrap_replicas(legacy, 9) == 7
    for garbage in ("", "0", "-1", "three"):
        legacy["metadata"]["annotations"] = {BOOTSTRAP_REPLICAS_ANNOTATION: garbage}
        assert bootstrap_replicas(legacy, 9) == 7
    legacy["spec"] = {}
    assert bootstrap_replicas(legacy, 9) == 9


@pytest.mark.parametrize("ordinal", [0, 2, 4])
def test_the_worker_accepts_the_pod_environment(ordinal: int) -> None:
    spec = parse_spec(CASES["lock_manager"]).model_copy(update={"replicas": 5})
    env = pod_env("locks", ordinal, spec, bootstrap_replicas=3)  # created at 3, grown to 5
    settings = load_settings(env)
    assert settings.node_id == f"locks-{ordinal}"
    assert settings.node_type == "lock_manager"
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert env["ADVERTISE_URL"] == f"http://locks-{ordinal}.locks-peers.apps.svc.cluster.local:8000"
    bootstrap = {f"locks-{i}" for i in range(3)}
    assert set(settings.peer_urls) == bootstrap - {f"locks-{ordinal}"}
    assert settings.peer_urls["locks-1"] == "http://locks-1.locks-peers.apps.svc.cluster.local:8000"
    # RAFT_JOIN=auto comes with the worker's discovery change; the voters parse today.
    without_join = {key: value for key, value in env.items() if key != "RAFT_JOIN"}
    voters = load_lock_settings(without_join).bootstrap_voters(settings.node_id, [])
    assert voters == ("locks-0", "locks-1", "locks-2")


def test_the_worker_accepts_role_settings_from_the_config_map() -> None:
    queue_env = pod_env("jobs", 0, parse_spec(CASES["settings"]))
    assert load_queue_settings(queue_env).vnodes == 512
    assert load_settings(queue_env).log_level == "DEBUG"
    cache_spec = parse_spec({"role": "cache", "settings": {"CACHE_POLICY": "lfu"}})
    assert load_cache_settings(pod_env("sessions", 1, cache_spec)).policy == "lfu"


def test_cluster_name_is_a_valid_worker_cluster_name_unique_per_namespace() -> None:
    longest = "a" * crd.MAX_NAME_LENGTH
    assert CLUSTER_NAME_RE.match(cluster_name(longest, "n" * 63))
    assert cluster_name("locks", "team-a") != cluster_name("locks", "team-b")
    assert cluster_name("locks", "team-a") == cluster_name("locks", "team-a")
    assert cluster_name("locks", "team-a").startswith("locks-")


def test_probes() -> None:
    worker = container(build_statefulset("c", NS, parse_spec(CASES["cache"])))
    assert worker["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_hardened_security_context() -> None:
    sts = build_statefulset("c", NS, parse_spec(CASES["cache"]))
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    context = container(sts)["securityContext"]
    assert context == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(sts)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert pod["terminationGracePeriodSeconds"] == 30


def test_statefulset_shape() -> None:
    sts = build_statefulset("locks", NS, parse_spec(CASES["five_replicas"]))
    assert sts["spec"]["replicas"] == 5
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == "locks-peers"
    worker = container(sts)
    assert worker["image"] == "registry.example.com/distcluster/node:0.2.0"
    assert worker["imagePullPolicy"] == "Always"
    assert worker["resources"] == crd.DEFAULT_RESOURCES


def test_labels_and_selectors_agree(case: tuple[str, ClusterSpec]) -> None:
    _, spec = case
    grouped = objects_by_kind("demo", NS, spec)
    (sts,) = grouped["StatefulSet"]
    selector = sts["spec"]["selector"]["matchLabels"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/component"] == spec.role
    worker_services = [
        s for s in grouped["Service"] if not s["metadata"]["name"].endswith("-redis")
    ]
    assert [s["spec"]["selector"] for s in worker_services] == [selector, selector]
    assert grouped["PodDisruptionBudget"][0]["spec"]["selector"] == {"matchLabels": selector}
    assert dict(part.split("=") for part in selector_string("demo").split(",")) == selector
    for deployment in grouped.get("Deployment", []):
        redis_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert not selector.items() <= redis_labels.items()
        redis_selector = deployment["spec"]["selector"]["matchLabels"]
        assert redis_selector.items() <= redis_labels.items()
        assert not redis_selector.items() <= pod_labels.items()


def test_every_object_carries_the_standard_labels(case: tuple[str, ClusterSpec]) -> None:
    _, spec = case
    for obj in desired_objects("demo", NS, spec):
        labels = obj["metadata"]["labels"]
        assert obj["metadata"]["namespace"] == NS
        assert labels["app.kubernetes.io/name"] == "distcluster"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "distcluster-operator"
        assert labels["app.kubernetes.io/component"] in (spec.role, "redis")
        assert "ownerReferences" not in obj["metadata"]


def test_services() -> None:
    grouped = objects_by_kind("locks", NS, parse_spec(CASES["lock_manager"]))
    services = {s["metadata"]["name"]: s["spec"] for s in grouped["Service"]}
    assert services["locks-peers"]["clusterIP"] == "None"
    assert services["locks-peers"]["publishNotReadyAddresses"] is True
    assert services["locks"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert services["locks-redis"]["ports"][0]["port"] == 6379


def test_pod_disruption_budget() -> None:
    (pdb,) = objects_by_kind("locks", NS, parse_spec(CASES["lock_manager"]))["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_default_anti_affinity_spreads_workers_over_nodes() -> None:
    pod = build_statefulset("c", NS, parse_spec(CASES["cache"]))["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == (
            build_statefulset("c", NS, parse_spec(CASES["cache"]))["spec"]["selector"][
                "matchLabels"
            ]
        )
    )


def test_user_affinity_and_placement_are_passed_through() -> None:
    pod = build_statefulset("c", NS, parse_spec(CASES["custom_affinity"]))["spec"]["template"][
        "spec"
    ]
    assert pod["affinity"] == CASES["custom_affinity"]["affinity"]
    placed = build_statefulset("c", NS, parse_spec(CASES["placement"]))["spec"]["template"]["spec"]
    assert placed["nodeSelector"] == CASES["placement"]["nodeSelector"]
    assert placed["tolerations"] == CASES["placement"]["tolerations"]


def test_settings_reach_the_config_map_and_roll_the_pods_when_changed() -> None:
    spec = parse_spec(CASES["settings"])
    grouped = objects_by_kind("jobs", NS, spec)
    assert grouped["ConfigMap"][0]["data"] == CASES["settings"]["settings"]

    def settings_hash(settings: dict[str, str]) -> str:
        changed = parse_spec({**CASES["settings"], "settings": settings})
        template = build_statefulset("jobs", NS, changed)["spec"]["template"]
        return str(template["metadata"]["annotations"]["distcluster.io/settings-hash"])

    same = dict(reversed(list(CASES["settings"]["settings"].items())))
    assert settings_hash(same) == settings_hash(CASES["settings"]["settings"])
    assert settings_hash({"QUEUE_VNODES": "256"}) != settings_hash(CASES["settings"]["settings"])


def test_names_stay_within_kubernetes_limits() -> None:
    name = "a" * crd.MAX_NAME_LENGTH
    for obj in desired_objects(name, NS, parse_spec(CASES["persistent_redis"])):
        assert len(obj["metadata"]["name"]) <= 63
    names = object_names(name)
    assert len(f"{names.statefulset}-{'x' * 10}") <= 63  # The controller-revision-hash label.
    assert len(f"{names.peers_service}") <= 63


def test_a_name_too_long_or_not_a_dns_label_is_refused() -> None:
    spec = parse_spec(CASES["cache"])
    with pytest.raises(SpecError, match="at most 52 characters"):
        desired_objects("a" * (crd.MAX_NAME_LENGTH + 1), NS, spec)
    with pytest.raises(SpecError, match="start with a letter"):
        desired_objects("1cache", NS, spec)


def test_builders_are_pure_and_return_fresh_objects() -> None:
    spec = parse_spec(CASES["custom_affinity"])
    first = desired_objects("c", NS, spec)
    snapshot = copy.deepcopy(first)
    first[-2]["spec"]["template"]["spec"]["affinity"]["mutated"] = True
    first[0]["data"]["X"] = "1"
    assert desired_objects("c", NS, spec) == snapshot
