"""Pure status: what a DistCluster's `status` should say, from what the operator observed.

The handlers observe (the StatefulSet's status, the Raft leader from a node's
`/raft/status`, the ready pods) and patch; this module only decides. Time comes in as
`now_iso`, so the same observations always give the same status, and tests need no clock.

Phase, in order of precedence (the first rule that matches):
* `Pending`: no StatefulSet status yet, or no worker ready.
* `Progressing`: the StatefulSet has more or fewer pods than wanted (`Scaling`), is rolling
  out a new template (`RollingUpdate`), has pods not ready (`ReplicasNotReady`), or, for
  lock_manager, every pod is ready but no leader is known (`NoLeader`).
* `Ready`: every wanted worker is ready, updated, and (lock_manager) a leader is known.
* `Degraded`: from `degraded_status`: the spec cannot be applied (for example
  `InvalidSpec`); nothing is built or changed until it is fixed. Also, for lock_manager,
  when a Raft membership call failed (`MembershipChangeFailed`, a `MembershipNote` with
  `failed`): the StatefulSet is left as it is and the call is retried on the next pass.

A lock_manager's membership step under way (a `MembershipNote` without `failed`: a member
being added or removed, a change not committed yet, a new pod not ready) turns `Ready` and
`Progressing` into `Progressing` with the note's reason: the pods may all be ready while the
configuration is not yet what the spec asks. `Pending` stays `Pending`.

Conditions follow the Kubernetes convention: `Ready`, `Progressing` and `Degraded`, each
with a CamelCase reason, a message and the generation it was computed from. A condition's
`lastTransitionTime` changes only when its `status` changes, so watchers can tell how long
a state has lasted.

`leader: None` is kept in the result on purpose: in the merge patch the handlers send, a
null removes a leader that is no longer true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distcluster_operator.builders import selector_string
from distcluster_operator.spec import ClusterSpec

Condition = dict[str, Any]


@dataclass(frozen=True)
class MembershipNote:
    """What the lock_manager's membership step of this pass says about the cluster: a
    CamelCase `reason`, a sentence, and whether a membership call failed."""

    reason: str
    message: str
    failed: bool = False


def find_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of the given type, or None."""
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    previous_conditions: Sequence[Mapping[str, Any]],
    now_iso: str,
) -> Condition:
    """A condition whose lastTransitionTime is kept from the previous one of its type
    when the status is unchanged, and is `now_iso` otherwise."""
    text = "True" if status else "False"
    previous = find_condition(previous_conditions, type_)
    since = now_iso
    if (
        previous is not None
        and previous.get("status") == text
        and previous.get("lastTransitionTime")
    ):
        since = str(previous["lastTransitionTime"])
    return {
        "type": type_,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def assess(
    spec: ClusterSpec, sts_status: Mapping[str, Any] | None, leader: str | None
) -> tuple[str, str, str]:
    """The phase, with the reason and message of the rule that decided it (see module doc)."""
    wanted = spec.replicas
    if sts_status is None:
        return "Pending", "StatefulSetMissing", "The StatefulSet has no status yet."
    current = int(sts_status.get("replicas") or 0)
    ready = int(sts_status.get("readyReplicas") or 0)
    updated = sts_status.get("updatedReplicas")
    if ready == 0:
        return "Pending", "NoReplicaReady", f"0/{wanted} replicas ready."
    if current != wanted:
        return (
            "Progressing",
            "Scaling",
            f"{current} replicas exist, {wanted} wanted; {ready} ready.",
        )
    if _rolling(sts_status) or (updated is not None and int(updated) < wanted):
        done = wanted if updated is None else int(updated)
        return "Progressing", "RollingUpdate", f"{done}/{wanted} replicas updated; {ready} ready."
    if ready < wanted:
        return "Progressing", "ReplicasNotReady", f"{ready}/{wanted} replicas ready."
    if spec.role == "lock_manager" and leader is None:
        return "Progressing", "NoLeader", f"{ready}/{wanted} replicas ready, no Raft leader known."
    suffix = f"; leader {leader}" if leader is not None else ""
    return "Ready", "AllReplicasReady", f"{ready}/{wanted} replicas ready{suffix}."


def _rolling(sts_status: Mapping[str, Any]) -> bool:
    current = sts_status.get("currentRevision")
    update = sts_status.get("updateRevision")
    return bool(current and update and current != update)


def compute_status(
    spec: ClusterSpec,
    generation: int,
    sts_status: Mapping[str, Any] | None,
    leader: str | None,
    members: list[str],
    previous_conditions: Sequence[Mapping[str, Any]],
    now_iso: str,
    *,
    name: str,
    membership: MembershipNote | None = None,
) -> dict[str, Any]:
    """The whole `status` of a DistCluster named `name` with a valid spec.

    `sts_status` is the StatefulSet's `status` (None when it does not exist yet), of which
    `replicas`, `readyReplicas`, `updatedReplicas`, `currentRevision` and `updateRevision`
    are read (a missing count is 0; missing update fields are not checked);
    `leader` the Raft leader's node id (always None for queue and cache); `members` the
    node ids of the cluster: for lock_manager the committed Raft voters, else the ready
    workers; `previous_conditions` the resource's current `status.conditions`; `now_iso`
    an RFC 3339 time such as `2025-01-02T03:04:05Z`; `membership` the lock_manager's
    membership step of this pass, when one is under way or failed (see the module doc).
    """
    phase, reason, message = assess(spec, sts_status, leader)
    if membership is not None and not membership.failed and phase in ("Ready", "Progressing"):
        phase, reason, message = "Progressing", membership.reason, membership.message
    in_progress = phase in ("Pending", "Progressing")
    failed = membership is not None and membership.failed
    conditions = [
        condition(
            "Ready", phase == "Ready", reason, message, generation, previous_conditions, now_iso
        ),
        condition(
            "Progressing",
            in_progress,
            reason if in_progress else "Reconciled",
            message if in_progress else "Every wanted replica is updated and ready.",
            generation,
            previous_conditions,
            now_iso,
        ),
        condition(
            "Degraded",
            failed,
            membership.reason if membership is not None and failed else "AsExpected",
            membership.message if membership is not None and failed else "The spec is valid.",
            generation,
            previous_conditions,
            now_iso,
        ),
    ]
    sts = sts_status or {}
    return {
        "phase": "Degraded" if failed else phase,
        "replicas": int(sts.get("replicas") or 0),
        "readyReplicas": int(sts.get("readyReplicas") or 0),
        "leader": leader if spec.role == "lock_manager" else None,
        "members": sorted(members),
        "selector": selector_string(name),
        "observedGeneration": generation,
        "conditions": conditions,
    }


def degraded_status(
    message: str,
    generation: int,
    previous_conditions: Sequence[Mapping[str, Any]],
    now_iso: str,
    *,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """The status of a DistCluster whose spec cannot be applied (a merge patch: only
    `phase`, `observedGeneration` and `conditions`; replica counts stay as they were).

    Degraded is True with `message`; Progressing is False, since nothing is changed until
    the spec is fixed; a previous Ready condition is kept, since the pods built from the
    last good spec still serve (it keeps its own, older, observedGeneration).
    """
    ready = find_condition(previous_conditions, "Ready")
    if ready is None:
        ready_condition = condition(
            "Ready", False, reason, message, generation, previous_conditions, now_iso
        )
    else:
        ready_condition = dict(ready)
    return {
        "phase": "Degraded",
        "observedGeneration": generation,
        "conditions": [
            ready_condition,
            condition(
                "Progressing", False, reason, message, generation, previous_conditions, now_iso
            ),
            condition("Degraded", True, reason, message, generation, previous_conditions, now_iso),
        ],
    }
