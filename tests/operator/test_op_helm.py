"""The Helm chart: it lints clean, renders valid Kubernetes for default and non-default
values, deploys the operator of manifests/ with the same RBAC, and refuses bad values.

Rendering and linting go through helm-python-sdk (Helm's Go SDK, in-process, offline); see
op_helm.py for what its calls do. With the release named like the chart and installed in
distcluster-system, the chart's objects carry the names of manifests/, so the operator
Deployment and the RBAC rules are compared with those files field for field and cannot
drift apart.
"""

from __future__ import annotations

import base64
import re
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from op_helm import (
    CHART,
    NAMESPACE,
    NOTES,
    RELEASE,
    chart_metadata,
    default_values,
    install_dry_run,
    lint,
    manifests,
    min_kube_version,
    only,
    render,
    render_objects,
    schema_errors,
    values_schema,
)
from op_kube import (
    MANIFESTS,
    REPO,
    SAMPLES,
    apply_defaults,
    cr_errors,
    load_documents,
    validate_k8s,
)

from distcluster_operator import crd
from distcluster_operator.builders import APP_NAME, INSTANCE_LABEL, NAME_LABEL
from distcluster_operator.spec import parse_spec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TEMPLATES = {
    "serviceaccount.yaml": "ServiceAccount",
    "clusterrole.yaml": "ClusterRole",
    "clusterrolebinding.yaml": "ClusterRoleBinding",
    "deployment.yaml": "Deployment",
    "sample-distcluster.yaml": "DistCluster",
}

# Non-default values, each of which must render, lint clean and give valid objects.
VALUE_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaces": {"watch": {"allNamespaces": False, "namespaces": ["apps", "payments"]}},
    "sample_lock_manager": {"sample": {"enabled": True}},
    "sample_queue": {
        "sample": {
            "enabled": True,
            "role": "queue",
            "replicas": 4,
            "settings": {"QUEUE_VISIBILITY_MS": "30000", "QUEUE_MAX_DELIVERIES": "5"},
        }
    },
    "sample_cache_in_a_watched_namespace": {
        "watch": {"allNamespaces": False, "namespaces": [NAMESPACE, "apps"]},
        "sample": {
            "enabled": True,
            "role": "cache",
            "name": "edge-cache",
            "replicas": 5,
            "image": "registry.example.com/distcluster/node:0.2.0",
            "settings": {"CACHE_POLICY": "lfu", "CACHE_CAPACITY": "20000"},
        },
    },
    "custom_image": {
        "image": {
            "repository": "registry.example.com/platform/distcluster-operator",
            "tag": "0.2.0-rc.1",
            "digest": "sha256:" + "ab" * 32,
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "registry-credentials"}],
    },
    "existing_service_account": {"serviceAccount": {"create": False, "name": "platform-ops"}},
    "named_service_account": {
        "serviceAccount": {
            "name": "distcluster",
            "annotations": {"iam.example.com/role": "distcluster-operator"},
        }
    },
    "no_rbac": {"rbac": {"create": False}},
    "resources_and_placement": {
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": 1}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["system"]}
                            ]
                        }
                    ]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"prometheus.io/scrape": "false"},
        "podLabels": {"team": "platform", "app.kubernetes.io/name": "hijacked"},
    },
    "peering_with_standby": {
        "replicaCount": 2,
        "peering": {"name": "distcluster"},
        "verbose": True,
        "liveness": {"port": 9090, "initialDelaySeconds": 5, "failureThreshold": 5},
    },
    "standalone": {"peering": {"standalone": True}},
    "overrides": {"nameOverride": "dc-operator", "fullnameOverride": "platform-distcluster"},
}

# Values the schema must refuse -> the path of jsonschema's error, or of an error below it
# ("" is the root), and of Helm's, unless HELM_DETAILS says what Helm reports instead.
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "replicaCount_string": ({"replicaCount": "two"}, "/replicaCount"),
    "replicaCount_negative": ({"replicaCount": -1}, "/replicaCount"),
    "unknown_top_level_key": ({"replicas": 2}, ""),
    "unknown_image_key": ({"image": {"name": "operator"}}, "/image"),
    "pullPolicy_not_in_enum": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "tag_not_a_string": ({"image": {"tag": 2}}, "/image/tag"),
    "digest_not_sha256": ({"image": {"digest": "md5:abc"}}, "/image/digest"),
    "pull_secret_without_name": ({"imagePullSecrets": [{"secret": "x"}]}, "/imagePullSecrets/0"),
    "namespaces_not_a_list": (
        {"watch": {"allNamespaces": False, "namespaces": "apps"}},
        "/watch/namespaces",
    ),
    "namespaces_while_watching_all": ({"watch": {"namespaces": ["apps"]}}, "/watch/namespaces"),
    "nothing_to_watch": ({"watch": {"allNamespaces": False}}, "/watch/namespaces"),
    "namespace_not_a_dns_label": (
        {"watch": {"allNamespaces": False, "namespaces": ["Apps"]}},
        "/watch/namespaces/0",
    ),
    "standby_without_peering": ({"replicaCount": 2}, "/peering/name"),
    "peering_and_standalone": ({"peering": {"name": "dc", "standalone": True}}, "/peering"),
    "privileged_liveness_port": ({"liveness": {"port": 80}}, "/liveness/port"),
    "zero_probe_period": ({"liveness": {"periodSeconds": 0}}, "/liveness/periodSeconds"),
    "verbose_string": ({"verbose": "yes"}, "/verbose"),
    "resources_unknown_key": ({"resources": {"request": {"cpu": "1"}}}, "/resources"),
    "resources_bad_quantity": (
        {"resources": {"limits": {"memory": "lots"}}},
        "/resources/limits/memory",
    ),
    "tolerations_not_a_list": ({"tolerations": {"key": "x"}}, "/tolerations"),
    "pod_label_value_too_long": ({"podLabels": {"team": "x" * 64}}, "/podLabels/team"),
    "existing_service_account_without_name": (
        {"serviceAccount": {"create": False}},
        "/serviceAccount/name",
    ),
    "rbac_create_string": ({"rbac": {"create": "true"}}, "/rbac/create"),
    "sample_unknown_role": ({"sample": {"role": "database"}}, "/sample/role"),
    "sample_even_lock_manager": ({"sample": {"replicas": 4}}, "/sample/replicas"),
    "sample_too_many_replicas": (
        {"sample": {"role": "queue", "replicas": 10}},
        "/sample/replicas",
    ),
    "sample_name_too_long": ({"sample": {"name": "a" * 53}}, "/sample/name"),
    "sample_name_not_a_dns_label": ({"sample": {"name": "Locks"}}, "/sample/name"),
    "sample_setting_not_a_string": (
        {"sample": {"settings": {"CACHE_CAPACITY": 10000}}},
        "/sample/settings/CACHE_CAPACITY",
    ),
    "sample_reserved_setting": ({"sample": {"settings": {"NODE_ID": "x"}}}, "/sample/settings"),
}
# Helm's validator reports propertyNames failures at the root.
HELM_DETAILS = {"sample_reserved_setting": "invalid propertyName 'NODE_ID'"}


def labels(obj: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = obj["metadata"]["labels"]
    return found


def manifest(name: str, kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in load_documents(MANIFESTS / name) if doc["kind"] == kind]
    return found


def sample_names_by_role() -> dict[str, str]:
    samples = [load_documents(path)[0] for path in sorted(SAMPLES.glob("*.yaml"))]
    return {doc["spec"]["role"]: doc["metadata"]["name"] for doc in samples}


def check_distcluster(obj: dict[str, Any]) -> None:
    """A DistCluster is checked like the repository's samples: the CRD's schema through
    jsonschema, before and after the API server's defaults, and its CEL rules through
    parse_spec."""
    assert cr_errors(obj) == []
    assert cr_errors(apply_defaults(crd.cr_schema(), obj)) == []
    parse_spec(obj["spec"], name=obj["metadata"]["name"])


# --- the chart's files -------------------------------------------------------------------


def test_chart_metadata() -> None:
    metadata = chart_metadata()
    assert metadata["apiVersion"] == "v2"
    assert metadata["name"] == CHART.name == "distcluster-operator"
    assert metadata["type"] == "application"
    pyproject_version = re.search(
        r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M
    )
    assert pyproject_version is not None
    assert metadata["version"] == metadata["appVersion"] == pyproject_version.group(1)
    # The default image is the one manifests/ deploys.
    image = manifest("operator-deployment.yaml", "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    assert image == f"{default_values()['image']['repository']}:{metadata['appVersion']}"
    assert metadata["description"] and metadata["keywords"] and metadata["maintainers"]
    assert min_kube_version() == "1.28"


def test_chart_icon_is_an_inline_svg() -> None:
    prefix = "data:image/svg+xml;base64,"
    icon = chart_metadata()["icon"]
    assert icon.startswith(prefix)
    root = ElementTree.fromstring(base64.b64decode(icon.removeprefix(prefix), validate=True))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_one_template_per_resource() -> None:
    templates = {path.name for path in (CHART / "templates").iterdir()}
    assert templates == {*TEMPLATES, "_helpers.tpl", "NOTES.txt"}
    rendered = manifests(render({"sample": {"enabled": True}}))
    for path, objects in rendered.items():
        assert [obj["kind"] for obj in objects] == [TEMPLATES[Path(path).name]], path


def test_crds_folder_holds_the_generated_crd_and_templates_hold_none() -> None:
    with helm.Chart.load(CHART) as chart:
        (crd_file,) = chart.crds
    assert crd_file["name"] == "crds/distclusters.yaml"
    (document,) = [doc for doc in yaml.safe_load_all(crd_file["data"]) if doc]
    assert document == crd.crd_manifest()
    kinds = {obj["kind"] for values in VALUE_CASES.values() for obj in render_objects(values)}
    assert "CustomResourceDefinition" not in kinds


def test_the_crd_is_valid_on_the_oldest_kubernetes_the_chart_admits() -> None:
    kubernetes_validate.validate(crd.crd_manifest(), min_kube_version(), strict=True)
    # And 1.27, which lacks the validation rules' fieldPath, would refuse it: the reason
    # for the chart's kubeVersion.
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd.crd_manifest(), "1.27", strict=True)


def values_yaml_key_paths() -> list[tuple[tuple[str, ...], bool]]:
    """(path, commented) for each mapping key of values.yaml outside lists; commented is
    whether the line right above it is a comment."""
    found: list[tuple[tuple[str, ...], bool]] = []
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if match:
            indent = len(match.group(1))
            stack = [(level, key) for level, key in stack if level < indent]
            stack.append((indent, match.group(2)))
            found.append((tuple(key for _, key in stack), previous.lstrip().startswith("#")))
        if line.strip():
            previous = line
    return found


def schema_property_paths(
    node: dict[str, Any], prefix: tuple[str, ...] = ()
) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for key, sub in node.get("properties", {}).items():
        paths.add((*prefix, key))
        paths |= schema_property_paths(sub, (*prefix, key))
    return paths


def test_every_value_is_commented_and_typed_in_the_schema() -> None:
    declared = schema_property_paths(values_schema())
    keys = values_yaml_key_paths()
    uncommented = [".".join(path) for path, commented in keys if path in declared and not commented]
    assert uncommented == []
    # Free-form objects (resources maps, security contexts) document their defaults as a
    # block; every chart-defined value is a schema property and appears in values.yaml.
    assert {path for path, _ in keys if len(path) == 1} | {("global",)} == {
        path for path in declared if len(path) == 1
    }
    assert declared - {path for path, _ in keys} == {("global",)}


def test_every_schema_property_is_described_and_the_defaults_are_valid() -> None:
    def undescribed(node: dict[str, Any], path: str) -> list[str]:
        missing = []
        for key, sub in node.get("properties", {}).items():
            if not sub.get("description"):
                missing.append(f"{path}.{key}")
            missing += undescribed(sub, f"{path}.{key}")
        return missing

    schema = values_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    assert undescribed(schema, "") == []
    assert schema_errors({}) == []


def test_the_sample_schema_mirrors_the_crd() -> None:
    sample = values_schema()["properties"]["sample"]["properties"]
    spec = crd.cr_schema()["properties"]["spec"]["properties"]
    assert sample["role"]["enum"] == spec["role"]["enum"] == list(crd.ROLES)
    assert (sample["replicas"]["minimum"], sample["replicas"]["maximum"]) == (
        spec["replicas"]["minimum"],
        spec["replicas"]["maximum"],
    )
    assert sample["name"]["maxLength"] == crd.MAX_NAME_LENGTH
    settings = sample["settings"]
    assert settings["propertyNames"]["pattern"] == crd.SETTING_NAME_PATTERN
    assert settings["propertyNames"]["not"]["enum"] == list(crd.RESERVED_SETTINGS)
    assert settings["maxProperties"] == spec["settings"]["maxProperties"]
    assert settings["additionalProperties"] == {
        "type": "string",
        "maxLength": spec["settings"]["additionalProperties"]["maxLength"],
    }
    assert default_values()["sample"]["replicas"] == crd.DEFAULT_REPLICAS
    pull_policies = values_schema()["properties"]["image"]["properties"]["pullPolicy"]["enum"]
    assert pull_policies == list(crd.PULL_POLICIES)


# --- lint and render for every values case ------------------------------------------------


@pytest.mark.parametrize("values_case", sorted(VALUE_CASES))
def test_lint_strict_has_no_findings(values_case: str) -> None:
    for kube_version in (None, f"v{min_kube_version()}.0"):
        report = lint(VALUE_CASES[values_case], kube_version=kube_version)
        assert report["total_charts_linted"] == 1
        assert report["messages"] == [] and report["errors"] == [], kube_version


def test_lint_can_fail() -> None:
    report = lint({"replicaCount": -1})
    assert report["errors"]
    assert any(message["severity"] == 3 for message in report["messages"])


@pytest.mark.parametrize("values_case", sorted(VALUE_CASES))
def test_every_rendered_object_is_valid(values_case: str) -> None:
    objects = render_objects(VALUE_CASES[values_case])
    assert {"Deployment"} <= {obj["kind"] for obj in objects}
    for obj in objects:
        if obj["kind"] == crd.KIND:
            check_distcluster(obj)
            continue
        validate_k8s(obj)
        kubernetes_validate.validate(obj, min_kube_version(), strict=True)


def test_validation_of_rendered_objects_is_strict_so_it_can_fail() -> None:
    deployment = only(render_objects(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(deployment)
    sample = only(render_objects({"sample": {"enabled": True}}), crd.KIND)
    sample["spec"]["replicas"] = 11
    assert cr_errors(sample)


@pytest.mark.parametrize("values_case", sorted(VALUE_CASES))
def test_labels_on_every_object(values_case: str) -> None:
    version = chart_metadata()["appVersion"]
    for obj in render_objects(VALUE_CASES[values_case]):
        found = labels(obj)
        assert found["helm.sh/chart"] == f"distcluster-operator-{chart_metadata()['version']}"
        assert found["app.kubernetes.io/instance"] == RELEASE
        assert found["app.kubernetes.io/version"] == version
        assert found["app.kubernetes.io/managed-by"] == "Helm"
        assert found["app.kubernetes.io/part-of"] == "distcluster-operator"
        assert found["app.kubernetes.io/name"] == (
            VALUE_CASES[values_case].get("nameOverride") or "distcluster-operator"
        )
        expected_component = "sample" if obj["kind"] == crd.KIND else "operator"
        assert found["app.kubernetes.io/component"] == expected_component
        assert all(len(value) <= 63 for value in found.values())


@pytest.mark.parametrize("values_case", sorted(VALUE_CASES))
def test_the_deployment_selects_its_own_pods(values_case: str) -> None:
    deployment = only(render_objects(VALUE_CASES[values_case]), "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert set(selector) == {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert selector.items() <= labels(deployment).items()


# --- defaults: the operator of manifests/ ------------------------------------------------


def test_default_objects_are_those_of_manifests() -> None:
    objects = render_objects()
    assert sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects) == sorted(
        (kind, "distcluster-operator")
        for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment")
    )
    account = manifest("serviceaccount.yaml", "ServiceAccount")
    rendered_account = only(objects, "ServiceAccount")
    assert rendered_account["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert (
        rendered_account["automountServiceAccountToken"] == account["automountServiceAccountToken"]
    )
    binding = manifest("rbac.yaml", "ClusterRoleBinding")
    rendered_binding = only(objects, "ClusterRoleBinding")
    assert rendered_binding["roleRef"] == binding["roleRef"]
    assert rendered_binding["subjects"] == binding["subjects"]


@pytest.mark.parametrize("values_case", ["defaults", "namespaces", "existing_service_account"])
def test_cluster_role_rules_equal_the_manifest(values_case: str) -> None:
    rendered = only(render_objects(VALUE_CASES[values_case]), "ClusterRole")
    assert rendered["rules"] == manifest("rbac.yaml", "ClusterRole")["rules"]


def test_default_deployment_equals_the_manifest() -> None:
    expected = manifest("operator-deployment.yaml", "Deployment")
    rendered = only(render_objects(), "Deployment")
    assert rendered["metadata"]["name"] == expected["metadata"]["name"]
    assert rendered["metadata"]["namespace"] == expected["metadata"]["namespace"]
    assert rendered["spec"]["replicas"] == expected["spec"]["replicas"]
    assert rendered["spec"]["strategy"] == expected["spec"]["strategy"]
    pod, expected_pod = rendered["spec"]["template"]["spec"], expected["spec"]["template"]["spec"]
    (container,), (expected_container,) = pod["containers"], expected_pod["containers"]
    # Named first so that a difference points at the field; then everything.
    for field in ("command", "args", "livenessProbe", "securityContext", "resources", "ports"):
        assert container[field] == expected_container[field], field
    assert pod["securityContext"] == expected_pod["securityContext"]
    assert pod == expected_pod
    # The manifest's pod labels are kept; the chart adds the release instance.
    assert (
        expected["spec"]["template"]["metadata"]["labels"].items()
        <= rendered["spec"]["template"]["metadata"]["labels"].items()
    )


def test_default_values_are_the_secure_ones() -> None:
    pod = only(render_objects(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = pod["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True


# --- non-default values ------------------------------------------------------------------


def operator_container(values: dict[str, Any]) -> dict[str, Any]:
    pod = only(render_objects(values), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    found: dict[str, Any] = container
    return found


def test_watched_namespaces_become_namespace_flags() -> None:
    args = operator_container(VALUE_CASES["namespaces"])["args"]
    assert args == [
        "--namespace=apps",
        "--namespace=payments",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]


def test_peering_standby_liveness_and_verbose() -> None:
    values = VALUE_CASES["peering_with_standby"]
    deployment = only(render_objects(values), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "--all-namespaces",
        "--liveness=http://0.0.0.0:9090/healthz",
        "--peering=distcluster",
        "--verbose",
    ]
    assert container["ports"] == [{"name": "health", "containerPort": 9090, "protocol": "TCP"}]
    probe = container["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert (probe["initialDelaySeconds"], probe["periodSeconds"]) == (5, 20)
    assert (probe["timeoutSeconds"], probe["failureThreshold"]) == (5, 5)
    standalone = operator_container(VALUE_CASES["standalone"])["args"]
    assert standalone[-1] == "--standalone"


def test_custom_image_and_pull_secrets() -> None:
    values = VALUE_CASES["custom_image"]
    pod = only(render_objects(values), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = values["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}@{image['digest']}"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    tag_only = operator_container({"image": {"tag": "dev"}})["image"]
    assert tag_only == "distcluster/operator:dev"


def test_existing_service_account_is_used_and_bound() -> None:
    objects = render_objects(VALUE_CASES["existing_service_account"])
    assert "ServiceAccount" not in {obj["kind"] for obj in objects}
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "platform-ops"
    assert only(objects, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "platform-ops", "namespace": NAMESPACE}
    ]


def test_named_service_account_with_annotations() -> None:
    objects = render_objects(VALUE_CASES["named_service_account"])
    account = only(objects, "ServiceAccount")
    assert account["metadata"]["name"] == "distcluster"
    assert account["metadata"]["annotations"] == {"iam.example.com/role": "distcluster-operator"}
    assert only(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "distcluster"
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "distcluster"


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    kinds = {obj["kind"] for obj in render_objects(VALUE_CASES["no_rbac"])}
    assert kinds == {"ServiceAccount", "Deployment"}


def test_resources_and_placement() -> None:
    values = VALUE_CASES["resources_and_placement"]
    template = only(render_objects(values), "Deployment")["spec"]["template"]
    pod = template["spec"]
    # Helm merges maps into the defaults key by key (the default memory limit stays) ...
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": 1, "memory": "256Mi"},
    }
    for field in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod[field] == values[field], field
    assert template["metadata"]["annotations"] == values["podAnnotations"]
    # Extra pod labels are added, but never replace the selector's.
    assert template["metadata"]["labels"]["team"] == "platform"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "distcluster-operator"


def test_null_drops_a_default() -> None:
    # ... and null removes a default, as values.yaml tells.
    resources = operator_container({"resources": {"limits": {"memory": None}}})["resources"]
    assert resources == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {}}
    context = operator_container({"securityContext": None})
    assert "securityContext" not in context


def test_defaults_leave_optional_pod_fields_out() -> None:
    pod = only(render_objects(), "Deployment")["spec"]["template"]
    assert "annotations" not in pod["metadata"]
    absent = {"nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"}
    assert absent.isdisjoint(pod["spec"])


def test_name_overrides() -> None:
    objects = render_objects(VALUE_CASES["overrides"])
    assert {obj["metadata"]["name"] for obj in objects} == {"platform-distcluster"}
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == (
        "dc-operator"
    )


def test_release_named_otherwise_prefixes_the_chart_name() -> None:
    objects = render_objects(release="ops")
    assert {obj["metadata"]["name"] for obj in objects} == {"ops-distcluster-operator"}
    objects = render_objects(release="distcluster-operator-prod")
    assert {obj["metadata"]["name"] for obj in objects} == {"distcluster-operator-prod"}


# --- the 63-character cut ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        # 53 characters, the longest release name Helm accepts: cut to exactly 63.
        ("r" * 53, "r" * 53 + "-distclust"),
        # 50: the cut ends on the "-" inside the chart name, which is then trimmed.
        ("r" * 50, "r" * 50 + "-distcluster"),
    ],
    ids=["53_characters", "50_characters_cut_on_a_dash"],
)
def test_long_release_names_are_cut_to_63_characters(release: str, expected: str) -> None:
    helm.validate_release_name(release)
    objects = render_objects({"sample": {"enabled": True}}, release=release)
    for obj in objects:
        if obj["kind"] != crd.KIND:
            assert obj["metadata"]["name"] == expected
        assert DNS_LABEL.match(obj["metadata"]["name"])
        assert len(obj["metadata"]["name"]) <= 63
        assert all(len(value) <= 63 for value in labels(obj).values())
        if obj["kind"] == crd.KIND:
            check_distcluster(obj)
        else:
            validate_k8s(obj)
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == expected
    assert only(objects, "ClusterRoleBinding")["roleRef"]["name"] == expected


def test_long_overrides_are_cut_to_63_characters() -> None:
    objects = render_objects({"fullnameOverride": "f" * 70, "nameOverride": "n" * 63})
    assert {obj["metadata"]["name"] for obj in objects} == {"f" * 63}
    for obj in objects:
        assert labels(obj)["app.kubernetes.io/name"] == "n" * 63


def test_helm_refuses_release_names_past_53_characters() -> None:
    # Why the chart only ever has the chart-name suffix to cut: Helm caps release names.
    with pytest.raises(helm.HelmInvalidArgError):
        helm.validate_release_name("r" * 54)


# --- the sample DistCluster --------------------------------------------------------------


@pytest.mark.parametrize("role", crd.ROLES)
def test_sample_for_each_role_is_a_valid_distcluster(role: str) -> None:
    objects = render_objects({"sample": {"enabled": True, "role": role}})
    sample = only(objects, crd.KIND)
    assert sample["apiVersion"] == crd.API_VERSION
    assert sample["metadata"]["namespace"] == NAMESPACE
    assert sample["metadata"]["name"] == sample_names_by_role()[role]
    assert sample["spec"] == {"role": role, "replicas": 3}
    check_distcluster(sample)


def test_sample_with_every_field() -> None:
    values = VALUE_CASES["sample_cache_in_a_watched_namespace"]
    sample = only(render_objects(values), crd.KIND)
    assert sample["metadata"]["name"] == "edge-cache"
    assert sample["spec"] == {
        key: values["sample"][key] for key in ("role", "replicas", "image", "settings")
    }
    check_distcluster(sample)


def test_no_sample_by_default() -> None:
    assert crd.KIND not in {obj["kind"] for obj in render_objects()}


def test_sample_outside_the_watched_namespaces_is_refused() -> None:
    values = {
        "watch": {"allNamespaces": False, "namespaces": ["apps"]},
        "sample": {"enabled": True},
    }
    assert schema_errors(values) == []  # The schema cannot know the release namespace.
    with pytest.raises(helm.HelmRenderError, match="watch.namespaces does not list"):
        render(values)


# --- bad values --------------------------------------------------------------------------


@pytest.mark.parametrize("values_case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(values_case: str) -> None:
    values, path = BAD_VALUES[values_case]
    error_paths = [error_path for error_path, _ in schema_errors(values)]
    assert any(
        error_path == path or (path and error_path.startswith(f"{path}/"))
        for error_path in error_paths
    ), error_paths
    with pytest.raises(helm.HelmValuesError) as raised:
        render(values)
    assert HELM_DETAILS.get(values_case, f"at '{path}'") in str(raised.value)


GUARDED_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "namespaces_while_watching_all": (
        {"watch": {"namespaces": ["apps"]}},
        "watch.namespaces requires watch.allNamespaces: false",
    ),
    "nothing_to_watch": ({"watch": {"allNamespaces": False}}, "list at least one namespace"),
    "peering_and_standalone": (
        {"peering": {"name": "dc", "standalone": True}},
        "exclude each other",
    ),
    "standby_without_peering": ({"replicaCount": 2}, "replicaCount above 1 requires peering"),
    "existing_service_account_without_name": (
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required",
    ),
}


@pytest.mark.parametrize("values_case", sorted(GUARDED_VALUES))
def test_templates_refuse_broken_combinations_without_the_schema(
    values_case: str, tmp_path: Path
) -> None:
    # `helm install --skip-schema-validation` must not deploy a broken operator either.
    # Render has no such switch (and lint only logs a template `fail`), so the chart is
    # rendered from a copy without its schema.
    values, message = GUARDED_VALUES[values_case]
    schemaless = shutil.copytree(CHART, tmp_path / CHART.name)
    (schemaless / "values.schema.json").unlink()
    with helm.Chart.load(schemaless) as chart:
        assert chart.schema is None
        chart.render(VALUE_CASES["defaults"], name=RELEASE, namespace=NAMESPACE)
        with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --- NOTES and the release as Helm installs it -------------------------------------------


def notes_manifest(notes: str) -> dict[str, Any]:
    """The DistCluster of the NOTES' `kubectl apply -f - <<EOF` example."""
    match = re.search(r"<<EOF\n(.*?)\n *EOF\n", notes, re.S)
    assert match is not None, notes
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    document: dict[str, Any] = yaml.safe_load("\n".join(line[indent:] for line in lines))
    return document


def test_notes_show_how_to_create_and_watch_a_distcluster() -> None:
    notes = render()[NOTES]
    assert f"rollout status deployment/{RELEASE}" in notes
    assert "kubectl --namespace default get distclusters --watch" in notes
    example = notes_manifest(notes)
    example["metadata"]["namespace"] = "default"
    check_distcluster(example)
    assert example["metadata"]["name"] == sample_names_by_role()["lock_manager"]
    assert f"scale distcluster/{example['metadata']['name']} --replicas=5" in notes
    watched = render(VALUE_CASES["namespaces"])[NOTES]
    assert "watching namespaces apps, payments" in watched
    assert "kubectl --namespace apps get distclusters --watch" in watched


def test_notes_name_the_sample_and_its_children() -> None:
    notes = render({"sample": {"enabled": True, "role": "queue"}})[NOTES]
    assert "created the DistCluster queue (role queue, 3 nodes)" in notes
    assert f"kubectl --namespace {NAMESPACE} get distclusters --watch" in notes
    # The selector of the children uses the labels the operator's builders set.
    assert f"-l {NAME_LABEL}={APP_NAME},{INSTANCE_LABEL}=queue" in notes
    assert "<<EOF" not in notes


def test_install_dry_run_accepts_the_chart() -> None:
    # The path of `helm install`: kubeVersion checked, release name validated, objects in
    # Helm's install order (the DistCluster, a custom resource, last).
    release = install_dry_run({"sample": {"enabled": True}})
    assert release["status"] == "pending-install"
    objects = [doc for doc in yaml.safe_load_all(release["manifest"]) if doc]
    assert [obj["kind"] for obj in objects] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        crd.KIND,
    ]
    assert "get distclusters --watch" in release["notes"]
    with pytest.raises(helm.HelmReleaseError, match="53"):
        install_dry_run(release="r" * 54)


def test_the_packaged_chart_renders_like_the_folder(tmp_path: Path) -> None:
    archive = helm.package(CHART, destination=tmp_path)
    assert Path(archive).name == "distcluster-operator-0.1.0.tgz"
    values = {"sample": {"enabled": True}}
    with helm.Chart.load(archive) as chart:
        assert chart.schema == values_schema()
        assert [item["name"] for item in chart.crds] == ["crds/distclusters.yaml"]
        assert chart.render(values, name=RELEASE, namespace=NAMESPACE) == render(values)
