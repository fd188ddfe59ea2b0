"""The operator's Helm chart, rendered and linted offline with helm-python-sdk (`helm_python`).

`helm_python` binds Helm's own Go SDK (libhelm_c, shipped inside the wheel): no helm binary,
no cluster and no network. What the tests rely on, learnt from its source:

- `Chart.render(values, name=, namespace=)` is `helm template` without `--include-crds`:
  {template path: text} for every file under templates/, NOTES.txt included, a disabled
  template as blank text. It validates the merged values against values.schema.json first
  (HelmValuesError, a ValueError) and turns a template `fail` into HelmRenderError. It does
  not check Chart.yaml's kubeVersion nor the release name; an install does both.
- `Config.install(..., dry_run="client")` is `helm install --dry-run=client`: it never
  contacts the API server (given a kubeconfig that points nowhere), checks kubeVersion
  against Helm's default capabilities and the release name, and returns the manifest in
  install order.
- `lint(path, values, strict=True)` reports findings as data, not exceptions; info-level
  findings (such as a missing icon) are listed too, so "no findings" means an empty list.
  Lint renders in Helm's lint mode, where a template's `fail` and `required` only log:
  the chart's own guards show up in `render`, not in lint.
- Values merge into the defaults map by map; a null removes a default key.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import yaml
from op_kube import REPO

CHART = REPO / "helm" / "distcluster-operator"
# Release and namespace that give the objects the names of manifests/.
RELEASE = "distcluster-operator"
NAMESPACE = "distcluster-system"
NOTES = "distcluster-operator/templates/NOTES.txt"

# A kubeconfig that leads nowhere, so a client dry run cannot touch a real cluster even
# when the environment names one.
OFFLINE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def chart_metadata() -> dict[str, Any]:
    """Chart.yaml."""
    metadata: dict[str, Any] = load_yaml(CHART / "Chart.yaml")
    return metadata


def min_kube_version() -> str:
    """The oldest Kubernetes minor version Chart.yaml's kubeVersion admits, as "1.28"."""
    match = re.fullmatch(r">=(\d+\.\d+)\.\d+(-0)?", chart_metadata()["kubeVersion"])
    if match is None:
        raise ValueError(f"unexpected kubeVersion {chart_metadata()['kubeVersion']!r}")
    return match.group(1)


def default_values() -> dict[str, Any]:
    """values.yaml."""
    values: dict[str, Any] = load_yaml(CHART / "values.yaml")
    return values


def values_schema() -> dict[str, Any]:
    """values.schema.json (JSON is YAML)."""
    schema: dict[str, Any] = load_yaml(CHART / "values.schema.json")
    return schema


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` deep-merged over `base`, maps key by key, as Helm merges user values."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def schema_errors(values: dict[str, Any]) -> list[tuple[str, str]]:
    """jsonschema's errors for `values` over the defaults, as (JSON pointer, message); the
    pointer is "" for the root, like Helm's."""
    schema = values_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [
        ("".join(f"/{part}" for part in error.absolute_path), error.message)
        for error in validator.iter_errors(merged(default_values(), values))
    ]


def render(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """{template path: rendered text} for the chart with `values` over its defaults."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=release, namespace=namespace)


def manifests(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The objects of each rendered template (NOTES.txt left out)."""
    return {
        path: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in sorted(rendered.items())
        if path != NOTES
    }


def render_objects(values: dict[str, Any] | None = None, **options: str) -> list[dict[str, Any]]:
    """Every object the chart renders, in template path order."""
    return [obj for objs in manifests(render(values, **options)).values() for obj in objs]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of `kind`."""
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def lint(values: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """`helm lint --strict` of the chart with `values`."""
    return helm.lint(CHART, values, strict=True, namespace=NAMESPACE, **options)


def install_dry_run(values: dict[str, Any] | None = None, release: str = RELEASE) -> dict[str, Any]:
    """`helm install --dry-run=client`: the release as Helm would install it."""
    with helm.Config(
        kubeconfig_content=OFFLINE_KUBECONFIG, namespace=NAMESPACE, storage_driver="memory"
    ) as config:
        result: dict[str, Any] = dict(
            config.install(CHART, release, values, namespace=NAMESPACE, dry_run="client")
        )
    return result
