"""The DistCluster specs the operator tests run over, and small helpers on built objects.

`CASES`: each role with defaults, and the non-default shapes (external Redis,
persistence, custom affinity, settings, 5 replicas, placement) whose objects must also be
valid Kubernetes.
"""

from __future__ import annotations

from typing import Any

from distcluster_operator.builders import desired_objects
from distcluster_operator.spec import ClusterSpec

CASES: dict[str, dict[str, Any]] = {
    "lock_manager": {"role": "lock_manager"},
    "queue": {"role": "queue"},
    "cache": {"role": "cache"},
    "external_redis": {
        "role": "queue",
        "redis": {"external": {"urlSecretRef": {"name": "queue-redis", "key": "redis-url"}}},
    },
    "persistent_redis": {
        "role": "lock_manager",
        "redis": {
            "managed": {
                "image": "redis:7.2-alpine",
                "persistence": {"enabled": True, "size": "5Gi", "storageClassName": "fast-ssd"},
                "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": 1, "memory": "1Gi"}},
            }
        },
    },
    "custom_affinity": {
        "role": "cache",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["coordination"]}
                            ]
                        }
                    ]
                }
            }
        },
    },
    "settings": {
        "role": "queue",
        "settings": {"QUEUE_VNODES": "512", "QUEUE_MAX_DELIVERIES": "3", "LOG_LEVEL": "DEBUG"},
    },
    "five_replicas": {
        "role": "lock_manager",
        "replicas": 5,
        "image": "registry.example.com/distcluster/node:0.2.0",
        "imagePullPolicy": "Always",
    },
    "placement": {
        "role": "cache",
        "nodeSelector": {"kubernetes.io/os": "linux", "pool": "coordination"},
        "tolerations": [
            {
                "key": "dedicated",
                "operator": "Equal",
                "value": "coordination",
                "effect": "NoSchedule",
            },
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
    },
}


def objects_by_kind(
    name: str, namespace: str, spec: ClusterSpec
) -> dict[str, list[dict[str, Any]]]:
    """`desired_objects` grouped by kind, in their original order within a kind."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for obj in desired_objects(name, namespace, spec):
        grouped.setdefault(obj["kind"], []).append(obj)
    return grouped
