"""The handlers: pure helpers first, then the real operator (kopf) against the kmock API mock.

Each operator test starts its own operator (`op_kmock.running_operator`, a timer every
0.3 s), acts as a user (create, edit, scale, delete) or as a controller (StatefulSet status,
ready pods, the Raft leader), and waits for the operator's answer in the mock's objects,
requests and Events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from op_kmock import CR_RESOURCE, INTERVAL_S, NAMESPACE, Harness, eventually, running_operator

from distcluster_operator import crd
from distcluster_operator.builders import desired_objects, labels, object_names
from distcluster_operator.handlers import (
    FINALIZER,
    InvalidSpecError,
    all_children,
    built_role,
    describe_changes,
    raft_status_url,
    ready_members,
    stale_children,
    started_members,
    status_changed,
    validate,
)
from distcluster_operator.kube import APPLIED_HASH_ANNOTATION
from distcluster_operator.spec import parse_spec

# --- pure helpers ---------------------------------------------------------------------


def test_raft_status_url_asks_the_client_service() -> None:
    assert raft_status_url("locks", "team-a") == "http://locks.team-a.svc:8000/raft/status"


def pod(name: str, ready: str, instance: str = "demo", workload: str = "node") -> dict[str, Any]:
    pod_labels = labels(instance, "queue") | {"distcluster.io/workload": workload}
    return {
        "metadata": {"name": name, "labels": pod_labels},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def test_ready_members_are_the_ready_worker_pods_of_this_cluster_sorted() -> None:
    pods = [
        pod("demo-2", "True"),
        pod("demo-0", "True"),
        pod("demo-1", "False"),
        pod("other-0", "True", instance="other"),
        pod("demo-redis-abc", "True", workload="redis"),
        {"metadata": {"name": "demo-3", "labels": pod("x", "True")["metadata"]["labels"]}},
    ]
    assert ready_members(pods, "demo") == ["demo-0", "demo-2"]


def test_started_members_include_running_pods_that_are_not_ready() -> None:
    joining = pod("demo-3", "False")
    joining["status"] |= {"phase": "Running", "containerStatuses": [{"started": True}]}
    starting = pod("demo-4", "False")
    starting["status"] |= {"phase": "Running", "containerStatuses": [{"started": False}]}
    pending = pod("demo-5", "False")
    pending["status"] |= {"phase": "Pending", "containerStatuses": []}
    other = pod("other-0", "False", instance="other")
    other["status"] |= joining["status"]
    pods = [pod("demo-0", "True"), joining, starting, pending, other]
    assert started_members(pods, "demo") == ["demo-0", "demo-3"]
    assert ready_members(pods, "demo") == ["demo-0"]


def test_status_changed_treats_null_as_absent() -> None:
    current = {"phase": "Ready", "leader": "demo-0"}
    assert not status_changed(current, {"phase": "Ready"})
    assert not status_changed({"phase": "Ready"}, {"phase": "Ready", "leader": None})
    assert status_changed(current, {"phase": "Ready", "leader": None})
    assert status_changed(current, {"phase": "Progressing"})


def test_validate_refuses_a_bad_spec_and_a_changed_role() -> None:
    queue_sts = {"metadata": {"labels": labels("demo", "queue")}}
    assert built_role(queue_sts) == "queue"
    assert built_role(None) is None
    assert validate({"role": "queue"}, "demo", queue_sts).role == "queue"
    assert validate({"role": "cache"}, "demo", None).role == "cache"
    with pytest.raises(InvalidSpecError) as refused:
        validate({"role": "cache"}, "demo", queue_sts)
    assert refused.value.reason == "RoleImmutable"
    assert "from queue to cache" in refused.value.message
    with pytest.raises(InvalidSpecError) as invalid:
        validate({"role": "lock_manager", "replicas": 4}, "demo", None)
    assert invalid.value.reason == "InvalidSpec"
    assert "spec.replicas must be odd" in invalid.value.message


def test_stale_children_are_the_possible_children_not_wanted() -> None:
    names = object_names("demo")
    external = parse_spec({"role": "queue", "redis": {"external": {"urlSecretRef": {"name": "s"}}}})
    stale = stale_children("demo", desired_objects("demo", NAMESPACE, external))
    assert stale == [
        ("v1", "PersistentVolumeClaim", names.redis_pvc),
        ("v1", "Service", names.redis_service),
        ("apps/v1", "Deployment", names.redis_deployment),
    ]
    managed = parse_spec({"role": "queue"})
    assert stale_children("demo", desired_objects("demo", NAMESPACE, managed)) == [
        ("v1", "PersistentVolumeClaim", names.redis_pvc)
    ]
    # Every child a builder can produce is one the operator knows how to find again.
    persistent = parse_spec(
        {"role": "queue", "redis": {"managed": {"persistence": {"enabled": True}}}}
    )
    built = {
        (o["apiVersion"], o["kind"], o["metadata"]["name"])
        for o in desired_objects("demo", NAMESPACE, persistent)
    }
    assert built == set(all_children("demo"))


def test_describe_changes_is_one_sentence() -> None:
    changes = [("created", "StatefulSet", "demo"), ("deleted", "Service", "demo-redis")]
    assert describe_changes(changes) == "created StatefulSet demo; deleted Service demo-redis."


# --- the operator against kmock ---------------------------------------------------------


@pytest.fixture
async def op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async with running_operator(tmp_path, monkeypatch) as harness:
        yield harness


def children(op: Harness, name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The children that exist, by (kind, name), as the mock server holds them."""
    plurals = {
        "ConfigMap": "v1/configmaps",
        "PersistentVolumeClaim": "v1/persistentvolumeclaims",
        "Service": "v1/services",
        "Deployment": "apps/v1/deployments",
        "StatefulSet": "apps/v1/statefulsets",
        "PodDisruptionBudget": "policy/v1/poddisruptionbudgets",
    }
    found = {}
    for _, kind, child in all_children(name):
        obj = op.obj(plurals[kind], child)
        if obj is not None:
            found[kind, child] = obj
    return found


def statefulset(op: Harness, name: str) -> dict[str, Any]:
    found = op.obj("apps/v1/statefulsets", name)
    assert found is not None, f"no StatefulSet {name}"
    return found


def env(sts: dict[str, Any]) -> dict[str, Any]:
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


async def ticks(op: Harness, count: int) -> None:
    """Wait until the timer has run `count` more times (each run reads the StatefulSet)."""
    before = len(op.requests("GET", "apps/v1/statefulsets"))
    await eventually(lambda: len(op.requests("GET", "apps/v1/statefulsets")) >= before + count)


def child_writes(op: Harness) -> list[Any]:
    """Requests that created, changed or deleted a child (anything but the CR and Events),
    in the order they were received."""
    return [
        request
        for request in op.server
        if request.method.value in ("POST", "PATCH", "DELETE")
        and request.resource not in (CR_RESOURCE, "v1/events")
    ]


@pytest.mark.timeout(60)
async def test_create_builds_every_child_adopted_by_the_resource(op: Harness) -> None:
    uid = await op.create("demo", {"role": "lock_manager"})
    spec = parse_spec({"role": "lock_manager"})
    wanted = {
        (o["kind"], o["metadata"]["name"]): o for o in desired_objects("demo", NAMESPACE, spec)
    }
    built = await eventually(
        lambda: len(children(op, "demo")) == len(wanted) and children(op, "demo")
    )
    assert set(built) == set(wanted)
    owner = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "name": "demo",
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for key, obj in built.items():
        assert obj["metadata"]["ownerReferences"] == [owner], key
        assert APPLIED_HASH_ANNOTATION in obj["metadata"]["annotations"], key
        # Exactly what the builders produce, nothing added but adoption and the hash.
        for section in ("spec", "data"):
            assert obj.get(section) == wanted[key].get(section), key
    status = await eventually(lambda: op.status("demo").get("phase") and op.status("demo"))
    assert status["phase"] == "Pending"
    assert status["selector"] == (
        "app.kubernetes.io/instance=demo,app.kubernetes.io/name=distcluster,"
        "distcluster.io/workload=node"
    )
    resource = op.cr("demo")
    assert resource is not None
    assert FINALIZER in resource["metadata"]["finalizers"]
    assert "kopf" not in resource.get("status", {})
    await eventually(
        lambda: (
            "distcluster.io/last-handled-configuration"
            in op.cr("demo")["metadata"].get("annotations", {})
        )  # type: ignore[index]
    )
    await eventually(lambda: any(e["reason"] == "Reconciled" for e in op.events()))


@pytest.mark.timeout(60)
async def test_status_follows_the_statefulset_the_pods_and_the_raft_leader(op: Harness) -> None:
    await op.create("demo", {"role": "lock_manager"})
    await eventually(lambda: op.obj("apps/v1/statefulsets", "demo"))
    op.fake_statefulset_status("demo", replicas=3, readyReplicas=0, updatedReplicas=3)
    await eventually(lambda: op.condition("demo", "Progressing")["status"] == "True")
    assert op.status("demo")["phase"] == "Pending"
    assert op.condition("demo", "Ready")["status"] == "False"

    for ordinal in range(3):
        op.fake_pod("demo", ordinal, ready=True)
    op.raft.leader = "demo-1"
    op.membership.voters = ["demo-0", "demo-1", "demo-2"]  # the status lists the voters
    op.fake_statefulset_status("demo", replicas=3, readyReplicas=3, updatedReplicas=3)
    await eventually(lambda: op.status("demo").get("phase") == "Ready")
    status = op.status("demo")
    assert status["leader"] == "demo-1"
    assert status["members"] == ["demo-0", "demo-1", "demo-2"]
    assert status["readyReplicas"] == 3
    assert op.condition("demo", "Ready")["status"] == "True"
    assert op.condition("demo", "Progressing")["status"] == "False"
    assert op.condition("demo", "Degraded")["status"] == "False"
    assert set(op.raft.urls) == {"http://demo.default.svc:8000/raft/status"}

    op.raft.leader = None  # an election is under way
    await eventually(lambda: op.status("demo").get("phase") == "Progressing")
    assert "leader" not in op.status("demo")
    assert op.condition("demo", "Progressing")["reason"] == "NoLeader"


@pytest.mark.timeout(60)
async def test_replicas_follow_the_spec_and_the_scale_subresource(op: Harness) -> None:
    await op.create("demo", {"role": "lock_manager"})
    await eventually(lambda: statefulset(op, "demo")["spec"]["replicas"] == 3)
    template = statefulset(op, "demo")["spec"]["template"]

    await op.update_spec("demo", {"replicas": 5})
    await eventually(lambda: statefulset(op, "demo")["spec"]["replicas"] == 5)
    assert statefulset(op, "demo")["spec"]["template"] == template

    await op.scale("demo", 7)
    await eventually(lambda: statefulset(op, "demo")["spec"]["replicas"] == 7)
    assert statefulset(op, "demo")["spec"]["template"] == template
    assert env(statefulset(op, "demo"))["PEERS"].count("=demo-") == 3  # the bootstrap set


@pytest.mark.timeout(60)
async def test_an_image_change_patches_the_pod_template_only(op: Harness) -> None:
    await op.create("demo", {"role": "queue"})
    await eventually(lambda: op.obj("policy/v1/poddisruptionbudgets", "demo"))
    await eventually(lambda: op.status("demo").get("phase"))
    writes_before = len(child_writes(op))

    await op.update_spec("demo", {"image": "registry.example.com/distcluster/node:0.2.0"})
    await eventually(
        lambda: (
            statefulset(op, "demo")["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.example.com/distcluster/node:0.2.0"
        )
    )
    writes = child_writes(op)[writes_before:]
    assert [(w.method.value, str(w.resource.plural), w.name) for w in writes] == [
        ("PATCH", "statefulsets", "demo")
    ]
    spec_paths = {op["path"] for op in writes[0].data if op["path"].startswith("/spec")}
    assert spec_paths == {"/spec/template"}


@pytest.mark.timeout(60)
async def test_the_timer_brings_back_what_was_deleted_or_edited_by_hand(op: Harness) -> None:
    await op.create("demo", {"role": "cache"})
    await eventually(lambda: op.obj("policy/v1/poddisruptionbudgets", "demo"))
    original = op.obj("v1/services", "demo-peers")

    await op.delete("v1", "Service", "demo-peers")
    assert op.obj("v1/services", "demo-peers") is None
    op.server.objects["apps/v1/statefulsets", NAMESPACE, "demo"].patch({"spec": {"replicas": 1}})

    restored = await eventually(lambda: op.obj("v1/services", "demo-peers"))
    assert original is not None
    assert restored["spec"] == original["spec"]
    assert restored["metadata"]["ownerReferences"] == original["metadata"]["ownerReferences"]
    assert restored["metadata"]["uid"] != original["metadata"]["uid"]  # a new object
    await eventually(lambda: statefulset(op, "demo")["spec"]["replicas"] == 3)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {"role": "lock_manager", "replicas": 4},
            "spec.replicas must be odd for role lock_manager",
        ),
        ({"role": "queue", "settings": {"REDIS_URL": "redis://x"}}, "spec.settings.REDIS_URL"),
    ],
    ids=["even-raft-replicas", "reserved-setting"],
)
async def test_an_invalid_spec_degrades_warns_once_and_builds_nothing(
    op: Harness, spec: dict[str, Any], problem: str
) -> None:
    await op.create("bad", spec)
    await eventually(lambda: op.status("bad").get("phase") == "Degraded")
    degraded = op.condition("bad", "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "InvalidSpec"
    assert problem in degraded["message"]
    assert op.condition("bad", "Progressing")["status"] == "False"
    warning = await eventually(lambda: [e for e in op.events() if e["reason"] == "InvalidSpec"])
    assert warning[0]["type"] == "Warning"
    assert problem in warning[0]["message"]
    assert warning[0]["involvedObject"]["name"] == "bad"

    await ticks(op, 3)
    assert child_writes(op) == []
    assert len([e for e in op.events() if e["reason"] == "InvalidSpec"]) == 1

    await op.update_spec("bad", {"replicas": 3, "settings": None})
    await eventually(lambda: op.obj("apps/v1/statefulsets", "bad"))
    await eventually(lambda: op.condition("bad", "Degraded")["status"] == "False")


@pytest.mark.timeout(60)
async def test_the_role_cannot_change(op: Harness) -> None:
    await op.create("demo", {"role": "queue"})
    await eventually(lambda: op.obj("policy/v1/poddisruptionbudgets", "demo"))
    await eventually(lambda: op.status("demo").get("phase"))
    writes_before = len(child_writes(op))

    await op.update_spec("demo", {"role": "cache"})
    await eventually(lambda: op.status("demo").get("phase") == "Degraded")
    assert op.condition("demo", "Degraded")["reason"] == "RoleImmutable"
    await eventually(lambda: any(e["reason"] == "RoleImmutable" for e in op.events()))
    await ticks(op, 3)
    assert child_writes(op)[writes_before:] == []
    assert env(statefulset(op, "demo"))["NODE_TYPE"] == "queue"


@pytest.mark.timeout(60)
async def test_switching_to_an_external_redis_prunes_the_managed_one(op: Harness) -> None:
    await op.create("demo", {"role": "queue"})
    await eventually(lambda: op.obj("apps/v1/deployments", "demo-redis"))
    foreign = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-redis-data"}}
    op.server.objects["v1/persistentvolumeclaims", NAMESPACE, "demo-redis-data"] = foreign

    external = {"external": {"urlSecretRef": {"name": "queue-redis", "key": "url"}}}
    await op.update_spec("demo", {"redis": {"managed": None, **external}})
    await eventually(lambda: op.obj("apps/v1/deployments", "demo-redis") is None)
    await eventually(lambda: op.obj("v1/services", "demo-redis") is None)
    assert env(statefulset(op, "demo"))["REDIS_URL"] == {
        "secretKeyRef": {"name": "queue-redis", "key": "url"}
    }
    # A same-named object the resource does not own is left alone.
    assert op.obj("v1/persistentvolumeclaims", "demo-redis-data") == foreign


@pytest.mark.timeout(60)
async def test_deletion_releases_the_resource_and_stops_reconciling(op: Harness) -> None:
    await op.create("demo", {"role": "queue"})
    await eventually(lambda: op.obj("policy/v1/poddisruptionbudgets", "demo"))
    await eventually(lambda: FINALIZER in op.cr("demo")["metadata"].get("finalizers", []))  # type: ignore[index]

    await op.delete(crd.API_VERSION, crd.KIND, "demo")
    # kopf stops the timer, then removes its finalizer: the resource is gone and the
    # garbage collector (not run by kmock) would remove the children through their owners.
    await eventually(lambda: op.cr("demo") is None)
    await op.delete("v1", "Service", "demo-peers")
    writes_before = len(child_writes(op))
    await asyncio.sleep(4 * INTERVAL_S)
    assert op.obj("v1/services", "demo-peers") is None
    assert child_writes(op)[writes_before:] == []
