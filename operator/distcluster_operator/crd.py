"""The `DistCluster` CustomResourceDefinition: the one source of truth for its schema.

`manifests/crd.yaml` and the Helm chart's `crds/` file are generated from `crd_manifest()`
by `python -m distcluster_operator.generate`, and a test fails when they drift, so the
schema is edited here and nowhere else.

The API server checks a custom resource against this schema (types, enums, defaults,
bounds and CEL rules) before the operator ever sees it. `spec.py` repeats every one of
those checks in Python, with the same defaults taken from the constants below, because
the operator must also refuse a bad spec where no API server ran the rules (the `kmock`
API mock in tests runs no CEL and applies no defaults).

CEL rules are kept few and simple, on bounded fields (`maxItems`, `maxProperties`,
`maxLength`), so that the API server's cost estimate never rejects the CRD itself.
"""

from __future__ import annotations

import copy
from typing import Any

GROUP = "distcluster.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "distclusters"
SINGULAR = "distcluster"
KIND = "DistCluster"
SHORT_NAMES = ("dc",)
CRD_NAME = f"{PLURAL}.{GROUP}"

ROLES = ("lock_manager", "queue", "cache")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PHASES = ("Pending", "Progressing", "Ready", "Degraded")
CONDITION_TYPES = ("Ready", "Progressing", "Degraded")

DEFAULT_REPLICAS = 3
MIN_REPLICAS = 1
MAX_REPLICAS = 9
DEFAULT_IMAGE = "distcluster/node:0.1.0"
DEFAULT_PULL_POLICY = "IfNotPresent"
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
DEFAULT_REDIS_IMAGE = "redis:7-alpine"
DEFAULT_REDIS_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
DEFAULT_REDIS_STORAGE = "1Gi"
DEFAULT_SECRET_KEY = "url"

# The StatefulSet takes the resource's name, its pods `<name>-<ordinal>` and its revision
# label `<name>-<10-char hash>` must stay within 63 characters, and Service names
# (`<name>-peers`) must be DNS-1035 labels: so at most 52 characters, starting with a letter.
MAX_NAME_LENGTH = 52
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# Variables the operator sets itself from the resource; a setting may not replace them (the
# pod's `env` would silently win over the ConfigMap's `envFrom`). The last four make a
# resize work without restarting pods: a setting such as DISCOVERY=static would break it.
RESERVED_SETTINGS = (
    "NODE_ID",
    "NODE_TYPE",
    "PEERS",
    "REDIS_URL",
    "CLUSTER_NAME",
    "PORT",
    "HOST",
    "ADVERTISE_URL",
    "DISCOVERY",
    "RAFT_INITIAL_VOTERS",
    "RAFT_JOIN",
)
SETTING_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
MAX_SETTINGS = 64
MAX_SETTING_VALUE_LENGTH = 4096
MAX_TOLERATIONS = 32

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
IMAGE_PATTERN = r"^\S+$"

Schema = dict[str, Any]


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def _object(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _string_map(description: str, value_description: str, **extra: Any) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {"type": "string", "description": value_description},
        **extra,
    }


def _quantity(description: str, **extra: Any) -> Schema:
    # The same shape as Kubernetes' own resource.Quantity in its OpenAPI documents.
    return {
        "description": description,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
        **extra,
    }


def _resources(description: str, default: dict[str, dict[str, str]]) -> Schema:
    def quantities(what: str) -> Schema:
        return {
            "type": "object",
            "description": f"{what}, by resource name (cpu, memory, ...).",
            "additionalProperties": _quantity("A quantity such as 500m, 128Mi or 2."),
            "maxProperties": 16,
        }

    return _object(
        description,
        {
            "requests": quantities("Resources the scheduler reserves for the container"),
            "limits": quantities("Most the container may use"),
        },
        default=copy.deepcopy(default),
    )


def _spec_schema() -> Schema:
    return _object(
        "Desired state of a DistCluster: which service it runs and how its pods are placed.",
        {
            "role": _string(
                "Service the nodes run (the worker's NODE_TYPE). Cannot be changed.",
                enum=list(ROLES),
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "self == oldSelf",
                            "message": "role is immutable; create a new DistCluster instead",
                        }
                    ]
                },
            ),
            "replicas": _integer(
                "Number of worker nodes; odd for lock_manager so that a Raft majority "
                "survives the loss of a minority.",
                default=DEFAULT_REPLICAS,
                minimum=MIN_REPLICAS,
                maximum=MAX_REPLICAS,
                format="int32",
            ),
            "image": _string(
                "Worker container image.",
                default=DEFAULT_IMAGE,
                minLength=1,
                maxLength=512,
                pattern=IMAGE_PATTERN,
            ),
            "imagePullPolicy": _string(
                "When the kubelet pulls the worker image.",
                enum=list(PULL_POLICIES),
                default=DEFAULT_PULL_POLICY,
            ),
            "resources": _resources("Worker container resources.", DEFAULT_RESOURCES),
            "settings": _settings_schema(),
            "nodeSelector": _string_map(
                "Node labels a worker pod's node must carry.",
                "Required value of the node label.",
                maxProperties=32,
            ),
            "tolerations": _tolerations_schema(),
            "affinity": {
                "type": "object",
                "description": "Pod affinity of the worker pods, as in a pod spec. When "
                "unset, the operator prefers to spread workers over nodes.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
            "redis": _redis_schema(),
        },
        required=["role"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.role != 'lock_manager' || self.replicas % 2 == 1",
                    "message": "replicas must be odd for role lock_manager",
                    "fieldPath": ".replicas",
                }
            ]
        },
    )


def _settings_schema() -> Schema:
    reserved = ", ".join(f"'{name}'" for name in RESERVED_SETTINGS)
    return {
        "type": "object",
        "description": "Role settings passed to every worker as environment variables "
        "(for example RAFT_ELECTION_TICKS, QUEUE_VNODES, CACHE_POLICY); values are strings.",
        "additionalProperties": {
            "type": "string",
            "description": "Value of the environment variable.",
            "maxLength": MAX_SETTING_VALUE_LENGTH,
        },
        "maxProperties": MAX_SETTINGS,
        "x-kubernetes-validations": [
            {
                "rule": f"self.all(k, k.matches('{SETTING_NAME_PATTERN}'))",
                "message": "setting names must be upper-case environment variable names",
            },
            {
                "rule": f"self.all(k, !(k in [{reserved}]))",
                "message": "settings may not set "
                + ", ".join(RESERVED_SETTINGS)
                + ": the operator sets them",
            },
        ],
    }


def _tolerations_schema() -> Schema:
    item = _object(
        "A taint the worker pods tolerate, as in a pod spec.",
        {
            "key": _string("Taint key; empty with operator Exists matches all.", maxLength=316),
            "operator": _string(
                "How the value is compared.", enum=["Exists", "Equal"], default="Equal"
            ),
            "value": _string("Taint value to match with operator Equal.", maxLength=63),
            "effect": _string(
                "Taint effect to match; empty matches all.",
                enum=["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ),
            "tolerationSeconds": _integer(
                "How long a NoExecute taint is tolerated before eviction.", format="int64"
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.operator) && self.operator == 'Exists' "
                    "&& has(self.value) && self.value != '')",
                    "message": "value must be empty when operator is Exists",
                },
                {
                    "rule": "(has(self.key) && self.key != '') || "
                    "(has(self.operator) && self.operator == 'Exists')",
                    "message": "an empty key requires operator Exists",
                },
                {
                    "rule": "!has(self.tolerationSeconds) || "
                    "(has(self.effect) && self.effect == 'NoExecute')",
                    "message": "tolerationSeconds requires effect NoExecute",
                },
            ]
        },
    )
    return {
        "type": "array",
        "description": "Taints the worker pods tolerate.",
        "items": item,
        "maxItems": MAX_TOLERATIONS,
    }


def _persistence_schema() -> Schema:
    return _object(
        "Keep Redis data (AOF) on a PersistentVolumeClaim instead of an emptyDir.",
        {
            "enabled": {
                "type": "boolean",
                "description": "Whether Redis data lives on a PersistentVolumeClaim.",
                "default": False,
            },
            "size": _quantity("Requested volume size.", default=DEFAULT_REDIS_STORAGE),
            "storageClassName": _string(
                "StorageClass of the claim; the cluster default when unset.",
                maxLength=253,
                pattern=DNS_SUBDOMAIN_PATTERN,
            ),
        },
        default={},
    )


def _external_schema() -> Schema:
    secret_ref = _object(
        "Secret key holding the Redis URL (redis://, rediss:// or unix://).",
        {
            "name": _string(
                "Name of a Secret in the DistCluster's namespace.",
                minLength=1,
                maxLength=253,
                pattern=DNS_SUBDOMAIN_PATTERN,
            ),
            "key": _string(
                "Key of the URL in the Secret.",
                default=DEFAULT_SECRET_KEY,
                minLength=1,
                maxLength=253,
                pattern=SECRET_KEY_PATTERN,
            ),
        },
        required=["name"],
    )
    return _object(
        "A Redis the operator does not manage, reached through a URL from a Secret.",
        {"urlSecretRef": secret_ref},
        required=["urlSecretRef"],
    )


def _redis_schema() -> Schema:
    managed = _object(
        "A Redis Deployment and Service created and owned by the operator.",
        {
            "image": _string(
                "Redis container image.",
                default=DEFAULT_REDIS_IMAGE,
                minLength=1,
                maxLength=512,
                pattern=IMAGE_PATTERN,
            ),
            "resources": _resources("Redis container resources.", DEFAULT_REDIS_RESOURCES),
            "persistence": _persistence_schema(),
        },
    )
    return _object(
        "The Redis holding the cluster's state: exactly one of managed or external.",
        {"managed": managed, "external": _external_schema()},
        default={"managed": {}},
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.managed) != has(self.external)",
                    "message": "set exactly one of redis.managed and redis.external",
                }
            ]
        },
    )


def _status_schema() -> Schema:
    condition = _object(
        "One aspect of the cluster's state, in the Kubernetes condition convention.",
        {
            "type": _string("Condition type.", enum=list(CONDITION_TYPES)),
            "status": _string("Whether the condition holds.", enum=["True", "False", "Unknown"]),
            "reason": _string("One CamelCase word for the last transition.", maxLength=1024),
            "message": _string("Human-readable details.", maxLength=32768),
            "lastTransitionTime": _string("When the status last changed.", format="date-time"),
            "observedGeneration": _integer(
                "metadata.generation the condition was computed from.", format="int64"
            ),
        },
        required=["type", "status"],
    )
    return _object(
        "Observed state of the DistCluster, written by the operator.",
        {
            "phase": _string("Summary of the conditions.", enum=list(PHASES)),
            "replicas": _integer("Worker pods that exist.", format="int32"),
            "readyReplicas": _integer(
                "Worker pods that pass their readiness probe.", format="int32"
            ),
            "leader": _string("Node id of the Raft leader (lock_manager only)."),
            "members": {
                "type": "array",
                "description": "Node ids of the ready workers.",
                "items": {"type": "string", "description": "A node id (its pod name)."},
            },
            "selector": _string("Label selector of the worker pods (scale subresource)."),
            "observedGeneration": _integer(
                "metadata.generation the status was computed from.", format="int64"
            ),
            "conditions": {
                "type": "array",
                "description": "Ready, Progressing and Degraded conditions.",
                "items": condition,
                "maxItems": 8,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    )


def _root_schema() -> Schema:
    return _object(
        "A cluster of DistCluster worker nodes running one coordination service.",
        {
            "apiVersion": _string("Versioned schema of this representation of an object."),
            "kind": _string("REST resource this object represents."),
            "metadata": {"type": "object", "description": "Standard object metadata."},
            "spec": _spec_schema(),
            "status": _status_schema(),
        },
        required=["spec"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                    "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
                    "(it names the StatefulSet, its pods and Services)",
                },
                {
                    "rule": f"self.metadata.name.matches('{NAME_PATTERN}')",
                    "message": "metadata.name must start with a letter and contain only "
                    "lower-case letters, digits and '-' (it names Services)",
                },
            ]
        },
    )


def _printer_columns() -> list[Schema]:
    def column(name: str, type_: str, path: str, description: str) -> Schema:
        return {"name": name, "type": type_, "jsonPath": path, "description": description}

    return [
        column("Role", "string", ".spec.role", "Service the nodes run."),
        column("Replicas", "integer", ".spec.replicas", "Desired worker nodes."),
        column("Ready", "integer", ".status.readyReplicas", "Ready worker nodes."),
        column("Leader", "string", ".status.leader", "Raft leader (lock_manager)."),
        column("Phase", "string", ".status.phase", "Summary of the conditions."),
        column("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
    ]


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition as a plain dict (a fresh copy on every call)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "distcluster",
                "app.kubernetes.io/component": "crd",
                "app.kubernetes.io/part-of": "distcluster-operator",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": SINGULAR,
                "kind": KIND,
                "listKind": f"{KIND}List",
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "distcluster"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": _root_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }


def cr_schema() -> Schema:
    """The openAPIV3Schema of the served version (for validating resources in tests)."""
    version: Schema = crd_manifest()["spec"]["versions"][0]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema
