"""parse_spec: the CRD's defaults, and one clear sentence per problem for every bad spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from op_cases import CASES

from distcluster_operator import crd
from distcluster_operator.spec import SpecError, check_name, parse_spec, quantity_value


def problems(spec: Any, name: str | None = None) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, name=name)
    assert caught.value.message == " ".join(caught.value.problems)
    return caught.value.problems


def test_defaults_of_a_minimal_spec() -> None:
    spec = parse_spec({"role": "lock_manager"})
    assert spec.replicas == 3
    assert spec.image == "distcluster/node:0.1.0"
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.resources.to_k8s() == crd.DEFAULT_RESOURCES
    assert spec.settings == {} and spec.node_selector == {} and spec.tolerations == []
    assert spec.affinity is None
    assert spec.external_redis is None
    managed = spec.managed_redis
    assert managed is not None
    assert managed.image == "redis:7-alpine"
    assert managed.persistence.enabled is False
    assert managed.persistence.size == "1Gi"
    assert managed.persistence.storage_class_name is None


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_every_case_parses(case_id: str) -> None:
    assert parse_spec(CASES[case_id]).role == CASES[case_id]["role"]


def test_external_redis() -> None:
    spec = parse_spec({"role": "cache", "redis": {"external": {"urlSecretRef": {"name": "r"}}}})
    assert spec.managed_redis is None
    assert spec.external_redis is not None
    assert spec.external_redis.url_secret_ref.name == "r"
    assert spec.external_redis.url_secret_ref.key == "url"


def test_a_read_only_mapping_is_accepted() -> None:
    class View(Mapping[str, Any]):
        """Like kopf's Spec: a mapping that is not a dict."""

        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Any:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    assert parse_spec(View(CASES["placement"])).tolerations[1].toleration_seconds == 300


def test_quantities_are_kept_as_text_and_compared_by_value() -> None:
    spec = parse_spec(
        {"role": "queue", "resources": {"requests": {"cpu": 1}, "limits": {"cpu": "1000m"}}}
    )
    assert spec.resources.to_k8s() == {"requests": {"cpu": "1"}, "limits": {"cpu": "1000m"}}
    assert quantity_value("1Gi") == 2**30
    assert quantity_value("500m") * 2 == 1
    assert quantity_value("1e3") == quantity_value("1k")


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "no role": ({}, ["spec.role is required."]),
    "unknown role": (
        {"role": "database"},
        ["spec.role must be 'lock_manager', 'queue' or 'cache', got 'database'."],
    ),
    "even lock manager": (
        {"role": "lock_manager", "replicas": 4},
        [
            "spec.replicas must be odd for role lock_manager, so that a Raft majority survives "
            "the loss of a minority, got 4."
        ],
    ),
    "replicas as text": (
        {"role": "queue", "replicas": "3"},
        ["spec.replicas must be an integer, got '3'."],
    ),
    "no replicas": ({"role": "queue", "replicas": 0}, ["spec.replicas must be at least 1, got 0."]),
    "too many replicas": (
        {"role": "cache", "replicas": 10},
        ["spec.replicas must be at most 9, got 10."],
    ),
    "replicas true": (
        {"role": "cache", "replicas": True},
        ["spec.replicas must be an integer, got true."],
    ),
    "override NODE_ID": (
        {"role": "cache", "settings": {"NODE_ID": "me"}},
        ["spec.settings.NODE_ID is set by the operator and cannot be overridden."],
    ),
    "override two": (
        {
            "role": "cache",
            "settings": {"REDIS_URL": "redis://x", "PEERS": "", "CACHE_POLICY": "lfu"},
        },
        [
            "spec.settings.PEERS is set by the operator and cannot be overridden.",
            "spec.settings.REDIS_URL is set by the operator and cannot be overridden.",
        ],
    ),
    "lower-case setting": (
        {"role": "cache", "settings": {"cache_policy": "lfu"}},
        [
            "spec.settings key 'cache_policy' must be an upper-case environment variable name "
            "(A-Z, 0-9 and _, not starting with a digit)."
        ],
    ),
    "setting as number": (
        {"role": "queue", "settings": {"QUEUE_VNODES": 512}},
        ["spec.settings.QUEUE_VNODES must be a string, got 512."],
    ),
    "both redis": (
        {"role": "queue", "redis": {"managed": {}, "external": {"urlSecretRef": {"name": "r"}}}},
        ["spec.redis must set exactly one of managed and external."],
    ),
    "neither redis": (
        {"role": "queue", "redis": {}},
        ["spec.redis must set exactly one of managed and external."],
    ),
    "secret without name": (
        {"role": "queue", "redis": {"external": {"urlSecretRef": {"key": "url"}}}},
        ["spec.redis.external.urlSecretRef.name is required."],
    ),
    "bad secret name": (
        {"role": "queue", "redis": {"external": {"urlSecretRef": {"name": "My_Secret"}}}},
        [
            "spec.redis.external.urlSecretRef.name must be a DNS subdomain (lower-case letters, "
            "digits, '-' and '.'), got 'My_Secret'."
        ],
    ),
    "bad size": (
        {
            "role": "queue",
            "redis": {"managed": {"persistence": {"enabled": "yes", "size": "lots"}}},
        },
        [
            "spec.redis.managed.persistence.enabled must be true or false, got 'yes'.",
            "spec.redis.managed.persistence.size must be a quantity such as 500m, 1Gi or 2, "
            "got 'lots'.",
        ],
    ),
    "zero size": (
        {"role": "queue", "redis": {"managed": {"persistence": {"enabled": True, "size": 0}}}},
        ["spec.redis.managed.persistence.size must be a positive quantity, got '0'."],
    ),
    "request above limit": (
        {
            "role": "queue",
            "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}},
        },
        ["spec.resources must not request more memory (1Gi) than its limit (512Mi)."],
    ),
    "redis request above limit": (
        {
            "role": "queue",
            "redis": {"managed": {"resources": {"requests": {"cpu": 2}, "limits": {"cpu": "1"}}}},
        },
        ["spec.redis.managed.resources must not request more cpu (2) than its limit (1)."],
    ),
    "bad pull policy and unknown field": (
        {"role": "queue", "imagePullPolicy": "Sometimes", "replica": 3},
        [
            "spec.imagePullPolicy must be 'Always', 'IfNotPresent' or 'Never', got 'Sometimes'.",
            "spec.replica is not a field of a DistCluster.",
        ],
    ),
    "image with a space": (
        {"role": "queue", "image": "distcluster/node 0.1"},
        ["spec.image must be an image without spaces, got 'distcluster/node 0.1'."],
    ),
    "empty image": ({"role": "queue", "image": ""}, ["spec.image must not be empty."]),
    "affinity as list": (
        {"role": "queue", "affinity": []},
        ["spec.affinity must be a mapping, got a list."],
    ),
    "node selector value": (
        {"role": "queue", "nodeSelector": {"zone": 1}},
        ["spec.nodeSelector.zone must be a string, got 1."],
    ),
    "tolerations": (
        {
            "role": "cache",
            "tolerations": [
                {"operator": "Exists", "value": "x"},
                {"effect": "NoSchedule"},
                {"key": "k", "tolerationSeconds": 5, "effect": "NoSchedule"},
                {"key": "k", "effect": "Sometimes"},
            ],
        },
        [
            "spec.tolerations[0] must have an empty value when operator is Exists.",
            "spec.tolerations[1] with an empty key must have operator Exists.",
            "spec.tolerations[2] may set tolerationSeconds only with effect NoExecute.",
            "spec.tolerations[3].effect must be 'NoSchedule', 'PreferNoSchedule' or 'NoExecute', "
            "got 'Sometimes'.",
        ],
    ),
    "redis as text": (
        {"role": "cache", "redis": "redis://x"},
        ["spec.redis must be a mapping, got 'redis://x'."],
    ),
}


@pytest.mark.parametrize("label", sorted(BAD))
def test_bad_specs_are_refused_with_one_sentence_per_problem(label: str) -> None:
    spec, expected = BAD[label]
    assert problems(spec) == expected


def test_spec_must_be_a_mapping() -> None:
    assert problems(["role", "queue"]) == ["spec must be a mapping, got a list."]


def test_too_many_settings() -> None:
    settings = {f"S_{i}": "x" for i in range(crd.MAX_SETTINGS + 1)}
    assert problems({"role": "queue", "settings": settings}) == [
        f"spec.settings must have at most {crd.MAX_SETTINGS} entries."
    ]


def test_name_problems_come_first_and_with_the_spec_problems() -> None:
    assert problems({"role": "db"}, name="Locks") == [
        "metadata.name must start with a letter and contain only lower-case letters, digits "
        "and '-' (it names Services), got 'Locks'.",
        "spec.role must be 'lock_manager', 'queue' or 'cache', got 'db'.",
    ]


def test_check_name() -> None:
    check_name("a" * crd.MAX_NAME_LENGTH)
    check_name("locks-2")
    for bad in ("a" * (crd.MAX_NAME_LENGTH + 1), "2locks", "locks-", "locks.team", ""):
        with pytest.raises(SpecError):
            check_name(bad)
