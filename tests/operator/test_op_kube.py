"""The API adapter: the pure apply decision (`patch_ops` and friends), then `Kube` itself
against the kmock API mock (no operator running)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import kmock
import pytest
from kubernetes.client import ApiClient, Configuration
from op_kmock import NAMESPACE, ApiServerEmulator, register_resources

from distcluster_operator import crd
from distcluster_operator.builders import build_config_map, build_peers_service, build_statefulset
from distcluster_operator.kube import (
    APPLIED_FIELDS_ANNOTATION,
    APPLIED_HASH_ANNOTATION,
    Kube,
    applied_hash,
    contains,
    field_hashes,
    is_controlled_by,
    patch_ops,
    recorded_field_hashes,
    resource_path,
    stamped,
)
from distcluster_operator.spec import parse_spec

OWNER = {
    "apiVersion": crd.API_VERSION,
    "kind": crd.KIND,
    "name": "demo",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def adopted(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["ownerReferences"] = [dict(OWNER)]
    return obj


def statefulset(spec: dict[str, Any]) -> dict[str, Any]:
    return adopted(build_statefulset("demo", NAMESPACE, parse_spec(spec)))


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as an API server would return it: stamped, plus server-side fields."""
    served = stamped(obj)
    served["metadata"] |= {"uid": "child-uid", "resourceVersion": "42"}
    served["status"] = {"replicas": 3}
    if served["kind"] == "Service":
        served["spec"]["clusterIPs"] = ["None"]
    if served["kind"] == "StatefulSet":
        container = served["spec"]["template"]["spec"]["containers"][0]
        container["terminationMessagePath"] = "/dev/termination-log"
        served["spec"]["revisionHistoryLimit"] = 10
    return served


def applied(existing: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server holds after `Kube.apply` patched `existing` into `desired`."""
    return jsonpatch.apply_patch(existing, patch_ops(existing, stamped(desired)))  # type: ignore[no-any-return]


def test_resource_paths_of_every_handled_kind() -> None:
    assert resource_path("v1", "ConfigMap", "ns") == "/api/v1/namespaces/ns/configmaps"
    assert (
        resource_path("apps/v1", "StatefulSet", "ns", "demo")
        == "/apis/apps/v1/namespaces/ns/statefulsets/demo"
    )
    assert (
        resource_path("policy/v1", "PodDisruptionBudget", "ns", "demo")
        == "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo"
    )
    assert (
        resource_path(crd.API_VERSION, crd.KIND, "ns", "demo", "scale")
        == "/apis/distcluster.io/v1alpha1/namespaces/ns/distclusters/demo/scale"
    )
    with pytest.raises(ValueError, match="Secret"):
        resource_path("v1", "Secret", "ns")


def test_the_hash_is_stable_and_ignores_itself() -> None:
    obj = statefulset({"role": "queue"})
    assert applied_hash(obj) == applied_hash(copy.deepcopy(obj))
    assert applied_hash(stamped(obj)) == applied_hash(obj)
    assert applied_hash(stamped(stamped(obj))) == applied_hash(obj)
    assert stamped(obj)["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] == applied_hash(obj)
    assert applied_hash(statefulset({"role": "queue", "replicas": 5})) != applied_hash(obj)
    assert APPLIED_HASH_ANNOTATION not in obj["metadata"].get("annotations", {})  # not mutated


def test_contains_allows_server_additions_only() -> None:
    assert contains({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}})
    assert not contains({"b": {"c": 2}}, {"b": {"c": 2, "d": 3}})
    assert contains([{"x": 1, "y": 2}], [{"x": 1}])
    assert not contains([{"x": 1}, {"x": 2}], [{"x": 1}])
    assert contains({"cpu": "1"}, {"cpu": 1})
    assert contains({"cpu": "0.5"}, {"cpu": 0.5})
    assert not contains({"flag": "True"}, {"flag": True})
    assert not contains({"n": 2}, {"n": 3})


def test_nothing_is_sent_for_an_object_that_is_current() -> None:
    desired = statefulset({"role": "queue"})
    assert patch_ops(as_served(desired), stamped(desired)) == []
    peers = adopted(build_peers_service("demo", NAMESPACE, parse_spec({"role": "queue"})))
    assert patch_ops(as_served(peers), stamped(peers)) == []


def test_a_hand_edit_is_reverted_and_server_fields_are_kept() -> None:
    desired = statefulset({"role": "queue"})
    existing = as_served(desired)
    existing["spec"]["replicas"] = 1  # kubectl scale statefulset/demo --replicas=1
    existing["metadata"]["labels"]["team"] = "a"  # someone else's label
    result = applied(existing, desired)
    assert result["spec"]["replicas"] == 3
    assert result["metadata"]["labels"]["team"] == "a"
    assert result["metadata"]["uid"] == "child-uid"
    assert result["status"] == {"replicas": 3}
    assert result["spec"]["revisionHistoryLimit"] == 10  # a server default left alone
    assert contains(result, stamped(desired))


def test_values_removed_from_the_desired_object_go_from_the_cluster() -> None:
    tolerated = {"role": "cache", "tolerations": [{"operator": "Exists"}]}
    existing = as_served(statefulset(tolerated))
    result = applied(existing, statefulset({"role": "cache"}))
    assert "tolerations" not in result["spec"]["template"]["spec"]
    # A merge patch would have kept the toleration: the hash is what notices the removal.
    assert contains(existing, statefulset({"role": "cache"}))

    settings = parse_spec({"role": "queue", "settings": {"A": "1", "B": "2"}})
    config_map = as_served(adopted(build_config_map("demo", NAMESPACE, settings)))
    fewer = adopted(build_config_map("demo", NAMESPACE, parse_spec({"role": "queue"})))
    assert applied(config_map, fewer)["data"] == {}


def spec_paths(ops: list[dict[str, Any]]) -> list[str]:
    return [op["path"] for op in ops if not op["path"].startswith("/metadata/")]


def test_only_the_fields_that_moved_are_replaced() -> None:
    desired = statefulset({"role": "queue"})
    existing = as_served(desired)
    assert recorded_field_hashes(existing) == field_hashes(desired)
    resized = copy.deepcopy(desired)
    resized["spec"]["replicas"] = 5
    ops = patch_ops(existing, stamped(resized))
    assert spec_paths(ops) == ["/spec/replicas"]  # the pod template is not rewritten
    result = jsonpatch.apply_patch(existing, ops)
    assert result["spec"]["replicas"] == 5
    assert recorded_field_hashes(result) == field_hashes(resized)
    assert patch_ops(result, stamped(resized)) == []

    reimaged = statefulset({"role": "queue", "image": "registry.example.com/node:2"})
    assert spec_paths(patch_ops(existing, stamped(reimaged))) == ["/spec/template"]


def test_a_field_edited_by_hand_is_replaced_although_its_hash_matches() -> None:
    desired = statefulset({"role": "queue"})
    existing = as_served(desired)
    existing["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = "older"
    existing["spec"]["template"]["spec"]["containers"][0]["image"] = "edited"
    assert spec_paths(patch_ops(existing, stamped(desired))) == ["/spec/template"]


@pytest.mark.parametrize("recorded", [None, "not json", "[1]"])
def test_without_readable_field_hashes_every_field_is_replaced(recorded: str | None) -> None:
    desired = statefulset({"role": "queue"})
    existing = as_served(desired)
    annotations = existing["metadata"]["annotations"]
    annotations[APPLIED_HASH_ANNOTATION] = "applied-by-an-older-operator"
    if recorded is None:
        del annotations[APPLIED_FIELDS_ANNOTATION]
    else:
        annotations[APPLIED_FIELDS_ANNOTATION] = recorded
    assert recorded_field_hashes(existing) == {}
    assert spec_paths(patch_ops(existing, stamped(desired))) == [
        f"/spec/{key}" for key in desired["spec"]
    ]


def test_owner_references_put_ours_first_and_keep_other_non_controllers() -> None:
    desired = statefulset({"role": "queue"})
    existing = as_served(desired)
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u2"}
    rival = {**other, "uid": "u3", "controller": True}
    existing["metadata"]["ownerReferences"] = [other, rival]
    result = applied(existing, desired)
    assert result["metadata"]["ownerReferences"] == [OWNER, other]
    assert is_controlled_by(result, "uid-1")
    assert not is_controlled_by(result, "u2")


# --- Kube against the mock server ----------------------------------------------------


@pytest.fixture
async def kube_server() -> AsyncIterator[tuple[Kube, ApiServerEmulator]]:
    async with ApiServerEmulator() as server, kmock.Server(server):
        register_resources(server)
        configuration = Configuration(host=str(server.url).rstrip("/"))
        yield Kube(ApiClient(configuration), timeout_s=5), server


@pytest.mark.timeout(30)
async def test_apply_creates_then_leaves_alone_then_reverts(
    kube_server: tuple[Kube, ApiServerEmulator],
) -> None:
    kube, server = kube_server
    desired = statefulset({"role": "queue"})
    assert await _in_thread(kube.apply, desired) == "created"
    assert await _in_thread(kube.apply, desired) == "unchanged"
    server.objects["apps/v1/statefulsets", NAMESPACE, "demo"].patch({"spec": {"replicas": 1}})
    assert await _in_thread(kube.apply, desired) == "patched"
    found = await _in_thread(kube.get, "apps/v1", "StatefulSet", NAMESPACE, "demo")
    assert found is not None
    assert found["spec"]["replicas"] == 3
    assert await _in_thread(kube.get, "apps/v1", "StatefulSet", NAMESPACE, "nope") is None


@pytest.mark.timeout(30)
async def test_delete_owned_touches_only_what_the_resource_controls(
    kube_server: tuple[Kube, ApiServerEmulator],
) -> None:
    kube, server = kube_server
    ours = adopted(build_config_map("demo", NAMESPACE, parse_spec({"role": "queue"})))
    await _in_thread(kube.apply, ours)
    server.objects["v1/configmaps", NAMESPACE, "foreign"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "foreign", "namespace": NAMESPACE},
    }
    assert not await _in_thread(kube.delete_owned, "v1", "ConfigMap", NAMESPACE, "foreign", "uid-1")
    assert not await _in_thread(kube.delete_owned, "v1", "ConfigMap", NAMESPACE, "gone", "uid-1")
    assert not await _in_thread(
        kube.delete_owned, "v1", "ConfigMap", NAMESPACE, "demo-settings", "other-uid"
    )
    assert await _in_thread(
        kube.delete_owned, "v1", "ConfigMap", NAMESPACE, "demo-settings", "uid-1"
    )
    assert await _in_thread(kube.get, "v1", "ConfigMap", NAMESPACE, "demo-settings") is None
    assert await _in_thread(kube.get, "v1", "ConfigMap", NAMESPACE, "foreign") is not None


async def _in_thread(fn: Any, *args: Any) -> Any:
    """Kube blocks; the mock server answers from this test's event loop."""
    return await asyncio.to_thread(fn, *args)
