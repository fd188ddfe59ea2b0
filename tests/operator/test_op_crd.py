"""The CRD: valid Kubernetes, documented, and in agreement with parse_spec.

jsonschema runs the CRD's types, enums, bounds and patterns but not its CEL rules; so
each bad resource the schema refuses must also be refused by parse_spec, and each CEL
rule has a resource that only the rule (and parse_spec) refuses.
"""

from __future__ import annotations

from typing import Any

import pytest
from op_cases import CASES
from op_kube import (
    SAMPLES,
    apply_defaults,
    cr_errors,
    load_documents,
    resource,
    schema_nodes,
    validate_k8s,
)

from distcluster_operator import crd
from distcluster_operator.spec import SpecError, parse_spec


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.cr_schema()["properties"]["spec"]
    return schema


def rules_by_path() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    root = crd.cr_schema()
    nodes = [("", root), *schema_nodes(root)]
    for path, node in nodes:
        for rule in node.get("x-kubernetes-validations", []):
            found.setdefault(path, []).append(rule["rule"])
    return found


def test_the_crd_is_a_valid_custom_resource_definition() -> None:
    validate_k8s(crd.crd_manifest())


def test_names_scope_and_subresources() -> None:
    manifest = crd.crd_manifest()
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == "distclusters.distcluster.io"
    assert (spec["group"], spec["scope"]) == ("distcluster.io", "Namespaced")
    assert spec["names"]["plural"] == crd.PLURAL == "distclusters"
    assert spec["names"]["singular"] == "distcluster"
    assert spec["names"]["kind"] == crd.KIND == "DistCluster"
    assert spec["names"]["shortNames"] == ["dc"]
    (version,) = spec["versions"]
    assert version["name"] == crd.VERSION == "v1alpha1"
    assert version["served"] and version["storage"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns_point_at_existing_fields() -> None:
    (version,) = crd.crd_manifest()["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Role", "Replicas", "Ready", "Leader", "Phase", "Age"]
    known = {path for path, _ in schema_nodes(crd.cr_schema())}
    for column in columns:
        if column["jsonPath"] != ".metadata.creationTimestamp":
            assert column["jsonPath"] in known
    assert {".status.replicas", ".status.selector", ".spec.replicas"} <= known


def test_every_field_has_a_description_and_a_type() -> None:
    for path, node in schema_nodes(crd.cr_schema()):
        assert node.get("description"), f"{path} has no description"
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed, f"{path} has no type"


def test_collections_with_rules_are_bounded_so_the_cel_cost_stays_low() -> None:
    nodes = dict(schema_nodes(crd.cr_schema()))
    for path in rules_by_path():
        node = nodes.get(path, {})
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
    assert "maxItems" in nodes[".spec.tolerations"]


def test_role_is_immutable_and_required() -> None:
    assert rules_by_path()[".spec.role"] == ["self == oldSelf"]
    assert spec_schema()["required"] == ["role"]
    assert spec_schema()["properties"]["role"]["enum"] == ["lock_manager", "queue", "cache"]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_crd_defaults_are_parse_spec_defaults(case_id: str) -> None:
    raw = CASES[case_id]
    defaulted = apply_defaults(spec_schema(), raw)
    assert cr_errors(resource(defaulted)) == []
    assert parse_spec(defaulted) == parse_spec(raw)


def test_apply_defaults_fills_nested_defaults_like_the_api_server() -> None:
    defaulted = apply_defaults(spec_schema(), {"role": "queue"})
    assert defaulted["replicas"] == 3
    assert defaulted["redis"]["managed"]["persistence"] == {"enabled": False, "size": "1Gi"}
    assert defaulted["resources"] == crd.DEFAULT_RESOURCES


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_good_resources_match_the_schema(case_id: str) -> None:
    assert cr_errors(resource(CASES[case_id])) == []


SCHEMA_BAD: dict[str, dict[str, Any]] = {
    "no role": {},
    "unknown role": {"role": "database"},
    "replicas as text": {"role": "queue", "replicas": "3"},
    "no replicas": {"role": "queue", "replicas": 0},
    "too many replicas": {"role": "queue", "replicas": 11},
    "pull policy": {"role": "queue", "imagePullPolicy": "Sometimes"},
    "image with a space": {"role": "queue", "image": "a b"},
    "bad quantity": {"role": "queue", "resources": {"requests": {"cpu": "lots"}}},
    "setting as number": {"role": "queue", "settings": {"QUEUE_VNODES": 512}},
    "secret name": {"role": "queue", "redis": {"external": {"urlSecretRef": {"name": "A_B"}}}},
    "secret without name": {"role": "queue", "redis": {"external": {"urlSecretRef": {}}}},
    "toleration effect": {"role": "queue", "tolerations": [{"key": "k", "effect": "Often"}]},
    "persistence flag": {
        "role": "queue",
        "redis": {"managed": {"persistence": {"enabled": "yes"}}},
    },
    "too many tolerations": {
        "role": "queue",
        "tolerations": [{"key": f"k{i}"} for i in range(crd.MAX_TOLERATIONS + 1)],
    },
    "affinity as list": {"role": "queue", "affinity": []},
}


@pytest.mark.parametrize("label", sorted(SCHEMA_BAD))
def test_what_the_schema_refuses_parse_spec_refuses(label: str) -> None:
    spec = SCHEMA_BAD[label]
    assert cr_errors(resource(spec)) != []
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_spec_is_required() -> None:
    bare = resource({})
    del bare["spec"]
    assert cr_errors(bare) == [": 'spec' is a required property"]


# Each CEL rule: the path it sits on, a spec only it refuses, and parse_spec's sentence.
CEL_CASES = [
    (".spec", {"role": "lock_manager", "replicas": 4}, "must be odd for role lock_manager"),
    (".spec.settings", {"role": "queue", "settings": {"queue_vnodes": "8"}}, "upper-case"),
    (".spec.settings", {"role": "queue", "settings": {"HOST": "::"}}, "set by the operator"),
    (".spec.redis", {"role": "queue", "redis": {}}, "exactly one of managed and external"),
    (
        ".spec.redis",
        {"role": "queue", "redis": {"managed": {}, "external": {"urlSecretRef": {"name": "r"}}}},
        "exactly one of managed and external",
    ),
    (
        ".spec.tolerations[]",
        {"role": "queue", "tolerations": [{"operator": "Exists", "value": "v"}]},
        "empty value when operator is Exists",
    ),
    (".spec.tolerations[]", {"role": "queue", "tolerations": [{"value": "v"}]}, "empty key"),
    (
        ".spec.tolerations[]",
        {"role": "queue", "tolerations": [{"key": "k", "tolerationSeconds": 1}]},
        "only with effect NoExecute",
    ),
]


@pytest.mark.parametrize(("path", "spec", "sentence"), CEL_CASES)
def test_what_only_cel_refuses_parse_spec_refuses(
    path: str, spec: dict[str, Any], sentence: str
) -> None:
    assert path in rules_by_path()
    assert cr_errors(resource(spec)) == []
    with pytest.raises(SpecError, match=sentence):
        parse_spec(spec)


def test_every_cel_rule_has_a_case() -> None:
    counted: dict[str, int] = {}
    for path, _, _ in CEL_CASES:
        counted[path] = counted.get(path, 0) + 1
    for path, rules in rules_by_path().items():
        if path in ("", ".spec.role"):
            continue  # metadata.name: test_op_spec's check_name; role: a transition rule.
        assert counted.get(path, 0) >= len(rules), path


def test_the_name_rules_match_check_name() -> None:
    root_rules = rules_by_path()[""]
    assert f"self.metadata.name.size() <= {crd.MAX_NAME_LENGTH}" in root_rules
    assert f"self.metadata.name.matches('{crd.NAME_PATTERN}')" in root_rules


@pytest.mark.parametrize("sample", ["lock-manager.yaml", "queue.yaml", "cache.yaml"])
def test_samples_match_the_schema_and_parse(sample: str) -> None:
    (document,) = load_documents(SAMPLES / sample)
    assert document["apiVersion"] == "distcluster.io/v1alpha1"
    assert document["kind"] == "DistCluster"
    assert cr_errors(document) == []
    spec = parse_spec(document["spec"], name=document["metadata"]["name"])
    assert spec.role == {"lock-manager.yaml": "lock_manager"}.get(sample, sample[:-5])


def test_the_lock_manager_sample_is_the_one_the_docs_scale() -> None:
    (document,) = load_documents(SAMPLES / "lock-manager.yaml")
    assert document["metadata"]["name"] == "locks"
