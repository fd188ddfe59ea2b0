"""Offline Kubernetes checks for the operator tests, with no cluster and no API server.

Objects the operator builds, and every file of `manifests/`, are validated against the
Kubernetes OpenAPI schemas that `kubernetes-validate` ships (the newest version it knows,
strict mode: unknown fields are errors). DistCluster resources are validated with
`jsonschema` against the CRD's own openAPIV3Schema; jsonschema ignores the
`x-kubernetes-*` keywords, so CEL rules are not run here (`parse_spec` checks them, and
the tests show it) and defaults are not applied (`apply_defaults` does that, the way the
API server does, for the tests that compare the CRD's defaults with `parse_spec`'s).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import latest_version, major_minor

from distcluster_operator import crd

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SAMPLES = MANIFESTS / "samples"

# The newest Kubernetes the installed kubernetes-validate knows (1.37 with 1.37.0).
K8S_VERSION = major_minor(latest_version())


def validate_k8s(obj: dict[str, Any]) -> None:
    """Raise kubernetes_validate.ValidationError unless `obj` is valid (strict)."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def cr_validator() -> jsonschema.protocols.Validator:
    """A jsonschema validator for whole DistCluster resources."""
    schema = crd.cr_schema()
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=jsonschema.FormatChecker())


def cr_errors(resource: dict[str, Any]) -> list[str]:
    """Schema errors of a DistCluster resource, as `path: message` strings."""
    return [
        f"{'.'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in cr_validator().iter_errors(resource)
    ]


def resource(spec: dict[str, Any], name: str = "demo") -> dict[str, Any]:
    """A DistCluster resource around `spec`."""
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Apply the schema's defaults to `value` like the API server: top-down, a missing
    property with a default gets it, and defaults inside it are then applied in turn."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in schema.get("properties", {}):
                    value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


def schema_nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named schema node below `schema` (properties, items, map values)."""
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from schema_nodes(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield f"{path}[]", schema["items"]
        yield from schema_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{path}{{}}", schema["additionalProperties"]
        yield from schema_nodes(schema["additionalProperties"], f"{path}{{}}")


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]
