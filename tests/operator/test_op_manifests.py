"""The files of `manifests/`: valid Kubernetes, consistent with each other, and RBAC that
grants what the operator's children need and nothing it never uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from op_cases import CASES
from op_kube import MANIFESTS, load_documents, validate_k8s

from distcluster_operator import crd
from distcluster_operator.builders import desired_objects
from distcluster_operator.spec import parse_spec

DEPLOY_FILES = sorted(path.name for path in MANIFESTS.glob("*.yaml"))
# Kind -> (API group, resource) of everything the builders produce.
RESOURCES = {
    "ConfigMap": ("", "configmaps"),
    "Service": ("", "services"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
}
CHILD_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def documents(name: str) -> list[dict[str, Any]]:
    return load_documents(MANIFESTS / name)


def cluster_role() -> dict[str, Any]:
    (role,) = [doc for doc in documents("rbac.yaml") if doc["kind"] == "ClusterRole"]
    return role


def granted(group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in cluster_role()["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs.update(rule["verbs"])
    return verbs


def operator_container() -> dict[str, Any]:
    (deployment,) = documents("operator-deployment.yaml")
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def test_the_expected_files_exist() -> None:
    assert DEPLOY_FILES == [
        "crd.yaml",
        "namespace.yaml",
        "operator-deployment.yaml",
        "rbac.yaml",
        "serviceaccount.yaml",
    ]


@pytest.mark.parametrize("name", DEPLOY_FILES)
def test_every_manifest_is_valid_kubernetes(name: str) -> None:
    docs = documents(name)
    assert docs
    for doc in docs:
        validate_k8s(doc)


def test_the_crd_manifest_is_the_generated_one() -> None:
    assert documents("crd.yaml") == [crd.crd_manifest()]


def test_kustomization_lists_every_manifest_in_install_order() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "Kustomization").read_text(encoding="utf-8"))
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert sorted(listed) == DEPLOY_FILES
    assert listed.index("namespace.yaml") < listed.index("serviceaccount.yaml")
    assert listed.index("crd.yaml") < listed.index("operator-deployment.yaml")
    # No *.yaml name: `kubectl apply -f manifests/` would try to apply it and fail.
    assert not list(MANIFESTS.glob("kustomization.y*ml"))


def test_namespaced_objects_live_in_the_operator_namespace() -> None:
    (namespace,) = documents("namespace.yaml")
    name = namespace["metadata"]["name"]
    assert name == "distcluster-system"
    (account,) = documents("serviceaccount.yaml")
    (deployment,) = documents("operator-deployment.yaml")
    assert account["metadata"]["namespace"] == deployment["metadata"]["namespace"] == name
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    (binding,) = [doc for doc in documents("rbac.yaml") if doc["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == cluster_role()["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": name}
    ]


def test_rbac_covers_every_child_the_builders_produce() -> None:
    kinds = {
        obj["kind"]
        for spec in CASES.values()
        for obj in desired_objects("demo", "ns", parse_spec(spec))
    }
    assert kinds == set(RESOURCES)
    for kind in kinds:
        group, resource = RESOURCES[kind]
        assert CHILD_VERBS <= granted(group, resource), kind


def test_rbac_covers_the_custom_resource_and_kopf() -> None:
    assert {"get", "list", "watch", "patch"} <= granted(crd.GROUP, crd.PLURAL)
    assert {"get", "patch", "update"} <= granted(crd.GROUP, f"{crd.PLURAL}/status")
    assert {"get", "patch", "update"} <= granted(crd.GROUP, f"{crd.PLURAL}/scale")
    assert {"create", "patch"} <= granted("", "events")
    assert {"create", "patch"} <= granted("events.k8s.io", "events")
    assert {"list", "watch"} <= granted("apiextensions.k8s.io", "customresourcedefinitions")
    assert {"list", "watch"} <= granted("", "namespaces")
    assert granted("", "pods") == {"get", "list", "watch"}
    for group in ("kopf.dev", "zalando.org"):
        assert {"get", "list", "watch", "patch"} <= granted(group, "clusterkopfpeerings")


def test_rbac_is_least_privilege() -> None:
    for rule in cluster_role()["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field]
        assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"]
    assert granted("", "secrets") == set()
    assert granted("distcluster.io", "distclusters") & {"create", "delete"} == set()
    assert granted("apiextensions.k8s.io", "customresourcedefinitions") <= {"get", "list", "watch"}


def test_operator_deployment() -> None:
    (deployment,) = documents("operator-deployment.yaml")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container()
    assert container["image"] == "distcluster/operator:0.1.0"
    assert container["command"] == ["distcluster-operator"]
    assert "--all-namespaces" in container["args"]
    liveness = [arg for arg in container["args"] if arg.startswith("--liveness=")]
    assert liveness == ["--liveness=http://0.0.0.0:8080/healthz"]
    (port,) = container["ports"]
    assert port["containerPort"] == 8080
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_operator_pod_is_hardened() -> None:
    (deployment,) = documents("operator-deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = operator_container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in operator_container()["volumeMounts"]}
    assert "/tmp" in mounts


def test_samples_are_not_in_the_install_set() -> None:
    samples = sorted(Path(p).name for p in (MANIFESTS / "samples").glob("*.yaml"))
    assert samples == ["cache.yaml", "lock-manager.yaml", "queue.yaml"]
