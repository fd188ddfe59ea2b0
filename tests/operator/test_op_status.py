"""compute_status and degraded_status: phases, conditions and their transition times."""

from __future__ import annotations

from typing import Any

import pytest
from op_kube import cr_errors, resource

from distcluster_operator.builders import selector_string
from distcluster_operator.spec import parse_spec
from distcluster_operator.status import (
    MembershipNote,
    compute_status,
    degraded_status,
    find_condition,
)

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:05:00Z"
LOCKS = parse_spec({"role": "lock_manager"})
QUEUE = parse_spec({"role": "queue"})


def sts(replicas: int = 3, ready: int = 3, **extra: Any) -> dict[str, Any]:
    return {"replicas": replicas, "readyReplicas": ready, **extra}


def status_of(
    sts_status: dict[str, Any] | None,
    leader: str | None = "locks-0",
    previous: list[dict[str, Any]] | None = None,
    now: str = T0,
    spec: Any = LOCKS,
) -> dict[str, Any]:
    members = [f"locks-{i}" for i in range((sts_status or {}).get("readyReplicas", 0))]
    return compute_status(spec, 7, sts_status, leader, members, previous or [], now, name="locks")


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("sts_status", "leader", "phase", "reason"),
    [
        (None, None, "Pending", "StatefulSetMissing"),
        (sts(3, 0), None, "Pending", "NoReplicaReady"),
        (sts(2, 2), "locks-0", "Progressing", "Scaling"),
        (sts(5, 3), "locks-0", "Progressing", "Scaling"),
        (sts(currentRevision="a", updateRevision="b"), "locks-0", "Progressing", "RollingUpdate"),
        (sts(updatedReplicas=2), "locks-0", "Progressing", "RollingUpdate"),
        (sts(3, 2), "locks-0", "Progressing", "ReplicasNotReady"),
        (sts(), None, "Progressing", "NoLeader"),
        (
            sts(updatedReplicas=3, currentRevision="b", updateRevision="b"),
            "locks-1",
            "Ready",
            "AllReplicasReady",
        ),
    ],
)
def test_phase_follows_the_statefulset_and_the_leader(
    sts_status: dict[str, Any] | None, leader: str | None, phase: str, reason: str
) -> None:
    status = status_of(sts_status, leader)
    assert status["phase"] == phase
    ready = phase == "Ready"
    assert conditions(status)["Ready"] == ("True" if ready else "False", reason)
    progressing = conditions(status)["Progressing"]
    assert progressing == (("False", "Reconciled") if ready else ("True", reason))
    assert conditions(status)["Degraded"] == ("False", "AsExpected")


def test_queue_and_cache_are_ready_without_a_leader() -> None:
    status = status_of(sts(), leader=None, spec=QUEUE)
    assert status["phase"] == "Ready"
    assert status["leader"] is None


def test_a_leader_reported_for_a_queue_is_dropped() -> None:
    assert status_of(sts(), leader="locks-0", spec=QUEUE)["leader"] is None


def test_the_status_fields() -> None:
    status = compute_status(
        LOCKS, 7, sts(3, 2), "locks-1", ["locks-2", "locks-0"], [], T0, name="locks"
    )
    assert status["replicas"] == 3
    assert status["readyReplicas"] == 2
    assert status["leader"] == "locks-1"
    assert status["members"] == ["locks-0", "locks-2"]
    assert status["selector"] == selector_string("locks")
    assert status["observedGeneration"] == 7
    assert all(c["observedGeneration"] == 7 for c in status["conditions"])
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Progressing", "Degraded"]
    ready = find_condition(status["conditions"], "Ready")
    assert ready is not None and ready["message"] == "2/3 replicas ready."


def test_missing_statefulset_counts_zero_replicas() -> None:
    status = status_of(None, leader=None)
    assert (status["replicas"], status["readyReplicas"], status["members"]) == (0, 0, [])


def test_transition_time_is_kept_while_a_condition_keeps_its_status() -> None:
    first = status_of(sts(3, 1), now=T0)
    again = status_of(sts(3, 2), previous=first["conditions"], now=T1)
    for before, after in zip(first["conditions"], again["conditions"], strict=True):
        assert after["lastTransitionTime"] == before["lastTransitionTime"] == T0
    ready = find_condition(again["conditions"], "Ready")
    assert ready is not None and ready["message"] == "2/3 replicas ready."


def test_transition_time_changes_when_the_status_flips() -> None:
    first = status_of(sts(3, 1), now=T0)
    ready = status_of(sts(), previous=first["conditions"], now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times == {"Ready": T1, "Progressing": T1, "Degraded": T0}


def test_status_matches_the_crd_schema_as_a_merge_patch() -> None:
    status = status_of(sts(), leader=None, spec=QUEUE)
    # In a merge patch a null removes the field; the stored status never holds one.
    stored = {key: value for key, value in status.items() if value is not None}
    assert cr_errors({**resource({"role": "queue"}), "status": stored}) == []
    degraded = degraded_status("bad", 2, [], T0)
    assert cr_errors({**resource({"role": "queue"}), "status": degraded}) == []


def test_degraded_status_for_a_first_invalid_spec() -> None:
    status = degraded_status("spec.role is required.", 1, [], T0)
    assert status["phase"] == "Degraded"
    assert status["observedGeneration"] == 1
    assert conditions(status) == {
        "Ready": ("False", "InvalidSpec"),
        "Progressing": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
    }
    degraded = find_condition(status["conditions"], "Degraded")
    assert degraded is not None
    assert degraded["message"] == "spec.role is required."
    assert degraded["lastTransitionTime"] == T0
    assert set(status) == {"phase", "observedGeneration", "conditions"}


def test_degraded_status_keeps_the_running_clusters_ready_condition() -> None:
    healthy = status_of(sts(), now=T0)
    status = degraded_status("bad", 8, healthy["conditions"], T1, reason="ApplyFailed")
    ready = find_condition(status["conditions"], "Ready")
    assert ready == find_condition(healthy["conditions"], "Ready")
    assert conditions(status)["Degraded"] == ("True", "ApplyFailed")
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times == {"Ready": T0, "Progressing": T0, "Degraded": T1}


def test_degraded_then_fixed() -> None:
    broken = degraded_status("bad", 2, [], T0)
    fixed = status_of(sts(), previous=broken["conditions"], now=T1)
    assert fixed["phase"] == "Ready"
    times = {c["type"]: c["lastTransitionTime"] for c in fixed["conditions"]}
    assert times == {"Ready": T1, "Progressing": T0, "Degraded": T1}


def noted(note: MembershipNote, sts_status: dict[str, Any] | None = None) -> dict[str, Any]:
    members = ["locks-0", "locks-1", "locks-2"]
    return compute_status(
        LOCKS, 7, sts_status or sts(), "locks-0", members, [], T0, name="locks", membership=note
    )


def test_a_membership_step_under_way_is_progressing_with_its_reason() -> None:
    adding = MembershipNote("AddingMember", "Adding locks-3 to the Raft configuration.")
    status = noted(adding)  # every pod ready, a leader known: Ready without the note
    assert status["phase"] == "Progressing"
    assert conditions(status) == {
        "Ready": ("False", "AddingMember"),
        "Progressing": ("True", "AddingMember"),
        "Degraded": ("False", "AsExpected"),
    }
    scaling = noted(adding, sts(replicas=5, ready=3))  # the note is more precise than Scaling
    assert conditions(scaling)["Progressing"] == ("True", "AddingMember")
    pending = noted(adding, sts(ready=0))  # nothing serves yet: still Pending
    assert pending["phase"] == "Pending"
    assert conditions(pending)["Progressing"] == ("True", "NoReplicaReady")


def test_a_failed_membership_call_is_degraded_and_keeps_the_replica_counts() -> None:
    failed = MembershipNote("MembershipChangeFailed", "Removing locks-4 failed.", failed=True)
    status = noted(failed, sts(replicas=5, ready=5))
    assert status["phase"] == "Degraded"
    assert status["replicas"] == 5
    assert conditions(status) == {
        "Ready": ("False", "Scaling"),
        "Progressing": ("True", "Scaling"),
        "Degraded": ("True", "MembershipChangeFailed"),
    }
    degraded = find_condition(status["conditions"], "Degraded")
    assert degraded is not None
    assert degraded["message"] == "Removing locks-4 failed."
    stored = {key: value for key, value in status.items() if value is not None}
    assert cr_errors({**resource({"role": "lock_manager"}), "status": stored}) == []
