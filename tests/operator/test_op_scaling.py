"""Scaling through the real operator against kmock: a lock_manager's StatefulSet and its Raft
membership calls move in the right order, a failed call leaves a Degraded condition and not a
shrunk quorum; queue and cache scale with no membership call at all.

The lock role's `/raft/members` is `op_kmock.FakeMembership`, which records each change with
the StatefulSet's `spec.replicas` at that moment; pods and their readiness are faked as the
StatefulSet controller and the kubelet would leave them. Pure helpers of the handlers that
serve scaling are tested first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from op_kmock import NAMESPACE, Harness, eventually, mock_api_server, operator_on, running_operator

from distcluster_operator.builders import BOOTSTRAP_REPLICAS_ANNOTATION as BOOTSTRAP
from distcluster_operator.builders import build_statefulset
from distcluster_operator.handlers import (
    MembershipAnswer,
    raft_members_url,
    statefulset_replicas,
    status_members,
    step_note,
)
from distcluster_operator.membership_plan import Membership, Step
from distcluster_operator.spec import parse_spec

NAME = "locks"
ALL3 = [f"{NAME}-{i}" for i in range(3)]
ALL5 = [f"{NAME}-{i}" for i in range(5)]
UNAVAILABLE = MembershipAnswer(503, {"error": {"code": "unavailable", "message": "no quorum"}})
BUSY = MembershipAnswer(
    409, {"error": {"code": "conf_change_in_progress", "message": "a change is running"}}
)

# --- pure helpers ---------------------------------------------------------------------


def test_raft_members_url_asks_the_client_service() -> None:
    assert raft_members_url("locks", "team-a") == "http://locks.team-a.svc:8000/raft/members"


def test_statefulset_replicas() -> None:
    assert statefulset_replicas(None) is None
    assert statefulset_replicas({"spec": {"replicas": 5}}) == 5
    assert statefulset_replicas({"spec": {}}) == 0


def test_step_note_by_outcome() -> None:
    remove = Step.remove_member(5, "locks-4")
    assert step_note(None, None) is None
    assert step_note(Step.done(3), None) is None
    assert step_note(Step.patch_replicas(5, "grow"), None) is None
    ok = step_note(remove, MembershipAnswer(200, {"voters": ALL3}))
    assert ok is not None and (ok.reason, ok.failed) == ("RemovingMember", False)
    busy = step_note(remove, BUSY)
    assert busy is not None and (busy.reason, busy.failed) == ("MembershipChangeInProgress", False)
    failed = step_note(remove, UNAVAILABLE)
    assert failed is not None and (failed.reason, failed.failed) == ("MembershipChangeFailed", True)
    assert "503 unavailable: no quorum" in failed.message
    assert "stays at 5 replicas" in failed.message
    unreachable = step_note(Step.add_member(5, "locks-3"), MembershipAnswer(0, {"reason": "down"}))
    assert unreachable is not None and unreachable.failed
    assert unreachable.message.startswith("Adding locks-3 failed (0 down)")


def test_status_members_are_the_committed_voters_for_locks() -> None:
    locks, queue = parse_spec({"role": "lock_manager"}), parse_spec({"role": "queue"})
    pending = Membership.of(ALL5, (), ALL3)
    assert status_members(locks, ALL5, pending, {}) == ALL3
    assert status_members(locks, ALL5, None, {"members": ["locks-0"]}) == ["locks-0"]
    assert status_members(locks, ALL5, None, {}) == []
    assert status_members(queue, ALL5, None, {"members": ["x"]}) == ALL5


# --- the operator against kmock ---------------------------------------------------------


@pytest.fixture
async def op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async with running_operator(tmp_path, monkeypatch) as harness:
        harness.membership.replicas = lambda: harness.replicas(NAME)
        yield harness


async def ticks(op: Harness, count: int) -> None:
    """Wait until the operator has made `count` more passes: a lock_manager pass asks for
    the configuration once; any pass reads the StatefulSet twice."""
    before_urls = len(op.membership.urls)
    before_gets = len(op.requests("GET", "apps/v1/statefulsets"))
    await eventually(
        lambda: (
            len(op.membership.urls) >= before_urls + count
            if before_urls
            else len(op.requests("GET", "apps/v1/statefulsets")) >= before_gets + 2 * count
        )
    )


async def running_locks(op: Harness, replicas: int) -> None:
    """A lock_manager cluster of `replicas` ready pods, all of them voters."""
    await op.create(NAME, {"role": "lock_manager", "replicas": replicas})
    await eventually(lambda: op.replicas(NAME) == replicas)
    for ordinal in range(replicas):
        op.fake_pod(NAME, ordinal, ready=True)
    op.membership.voters = [f"{NAME}-{i}" for i in range(replicas)]
    op.raft.leader = f"{NAME}-0"
    ready_status(op, replicas)
    await eventually(lambda: op.status(NAME).get("phase") == "Ready")


def ready_status(op: Harness, replicas: int) -> None:
    op.fake_statefulset_status(
        NAME, replicas=replicas, readyReplicas=replicas, updatedReplicas=replicas
    )


def env(op: Harness, variable: str) -> str:
    container = op.template(NAME)["spec"]["containers"][0]
    return str(next(item["value"] for item in container["env"] if item["name"] == variable))


def peers(op: Harness) -> int:
    return env(op, "PEERS").count(f"={NAME}-")


def assert_resized_in_place(op: Harness, template: dict[str, Any], bootstrap: int) -> None:
    """Only `spec.replicas` moved: the pod template is the one the StatefulSet was created
    with (so no pod restarts), every patch of it wrote `/spec/replicas` and nothing else,
    and the bootstrap size is the recorded one."""
    assert op.template(NAME) == template
    patches = op.statefulset_patches(NAME)
    assert patches and all(paths == ["/spec/replicas"] for paths in patches), patches
    statefulset = op.obj("apps/v1/statefulsets", NAME)
    assert statefulset is not None
    assert statefulset["metadata"]["annotations"][BOOTSTRAP] == str(bootstrap)
    assert peers(op) == bootstrap


def events(op: Harness, reason: str) -> list[dict[str, Any]]:
    return [event for event in op.events() if event["reason"] == reason]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["spec", "scale-subresource"])
async def test_scale_up_grows_the_statefulset_then_adds_each_ready_pod_in_order(
    op: Harness, path: str
) -> None:
    await running_locks(op, 3)
    template = op.template(NAME)
    if path == "spec":
        await op.update_spec(NAME, {"replicas": 5})
    else:
        await op.scale(NAME, 5)
    await eventually(lambda: op.replicas(NAME) == 5)
    assert_resized_in_place(op, template, bootstrap=3)
    assert env(op, "RAFT_INITIAL_VOTERS") == ",".join(ALL3)
    await ticks(op, 3)
    assert op.membership.calls == []  # the new pods are not ready yet
    await eventually(lambda: op.condition(NAME, "Progressing")["reason"] == "WaitingForPod")
    assert "locks-3" in op.condition(NAME, "Progressing")["message"]

    op.fake_pod(NAME, 3, ready=False, started=False)  # scheduled, its container not started
    op.fake_pod(NAME, 4, ready=False, started=True)  # out of order: locks-3 is not started
    await ticks(op, 3)
    assert op.membership.calls == []

    # A node waiting to join is never Ready (it knows no leader before it is added): a
    # started container is enough.
    op.fake_pod(NAME, 3, ready=False, started=True)
    await eventually(lambda: len(op.membership.calls) == 2)
    assert op.membership.calls == [("POST", "locks-3", 5), ("POST", "locks-4", 5)]
    assert set(op.membership.urls) == {"http://locks.default.svc:8000/raft/members"}
    ready_status(op, 5)
    await eventually(lambda: op.status(NAME).get("phase") == "Ready")
    assert op.status(NAME)["members"] == ALL5
    added = [event["message"] for event in events(op, "AddingMember")]
    assert added == [
        "locks-3 added to the Raft configuration.",
        "locks-4 added to the Raft configuration.",
    ]
    await ticks(op, 3)
    assert len(op.membership.calls) == 2  # settled: nothing more
    assert_resized_in_place(op, template, bootstrap=3)


@pytest.mark.timeout(60)
async def test_scale_down_removes_members_highest_first_before_the_pods_go(op: Harness) -> None:
    await running_locks(op, 5)
    template = op.template(NAME)
    op.membership.commit_removals = False  # each removal commits when the test says so
    await op.scale(NAME, 3)
    await eventually(lambda: len(op.membership.calls) == 1)
    assert op.membership.calls == [("DELETE", "locks-4", 5)]
    await eventually(
        lambda: op.condition(NAME, "Progressing")["reason"] == "MembershipChangeInProgress"
    )
    await ticks(op, 3)
    # Not committed yet: no second change, and every pod stays.
    assert op.membership.calls == [("DELETE", "locks-4", 5)]
    assert op.replicas(NAME) == 5
    assert op.condition(NAME, "Progressing")["status"] == "True"
    assert op.status(NAME)["members"] == ALL5  # the committed voters

    op.membership.commit()
    await eventually(lambda: len(op.membership.calls) == 2)
    assert op.membership.calls[1] == ("DELETE", "locks-3", 5)
    await ticks(op, 3)
    assert op.replicas(NAME) == 5
    assert op.status(NAME)["members"] == ALL5[:4]

    op.membership.commit()
    await eventually(lambda: op.replicas(NAME) == 3)
    assert_resized_in_place(op, template, bootstrap=5)
    assert env(op, "RAFT_INITIAL_VOTERS") == ",".join(ALL5)
    assert len(op.membership.calls) == 2
    ready_status(op, 3)
    await eventually(lambda: op.status(NAME).get("phase") == "Ready")
    assert op.status(NAME)["members"] == ALL3


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "answer",
    [UNAVAILABLE, MembershipAnswer(0, {"reason": "unreachable (ClientConnectorError)"})],
    ids=["503", "unreachable"],
)
async def test_a_failed_removal_degrades_warns_and_keeps_the_quorum(
    op: Harness, answer: MembershipAnswer
) -> None:
    await running_locks(op, 5)
    op.membership.fail = answer
    await op.update_spec(NAME, {"replicas": 3})
    await eventually(lambda: op.condition(NAME, "Degraded")["status"] == "True")
    degraded = op.condition(NAME, "Degraded")
    assert degraded["reason"] == "MembershipChangeFailed"
    assert "Removing locks-4 failed" in degraded["message"]
    assert op.status(NAME)["phase"] == "Degraded"
    warnings = await eventually(lambda: events(op, "MembershipChangeFailed"))
    assert warnings[0]["type"] == "Warning"
    assert warnings[0]["message"] == degraded["message"]

    await ticks(op, 4)
    assert op.replicas(NAME) == 5
    assert peers(op) == 5
    assert {call for call in op.membership.calls} == {("DELETE", "locks-4", 5)}
    assert len(op.membership.calls) >= 2  # retried on every pass
    assert len(events(op, "MembershipChangeFailed")) == 1  # warned once per message

    op.membership.fail = None
    await eventually(lambda: op.replicas(NAME) == 3)
    assert op.membership.calls[-2:] == [("DELETE", "locks-4", 5), ("DELETE", "locks-3", 5)]
    await eventually(lambda: op.condition(NAME, "Degraded")["status"] == "False")


@pytest.mark.timeout(60)
async def test_a_busy_cluster_is_progressing_not_degraded(op: Harness) -> None:
    await running_locks(op, 3)
    op.membership.fail = BUSY
    await op.update_spec(NAME, {"replicas": 5})
    await eventually(lambda: op.replicas(NAME) == 5)
    op.fake_pod(NAME, 3, ready=True)
    op.fake_pod(NAME, 4, ready=True)
    await eventually(lambda: len(op.membership.calls) >= 2)
    assert set(op.membership.calls) == {("POST", "locks-3", 5)}
    progressing = op.condition(NAME, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "MembershipChangeInProgress")
    assert op.condition(NAME, "Degraded")["status"] == "False"
    assert events(op, "MembershipChangeFailed") == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("role", ["queue", "cache"])
async def test_queue_and_cache_scale_without_membership_calls(op: Harness, role: str) -> None:
    await op.create(NAME, {"role": role})
    await eventually(lambda: op.replicas(NAME) == 3)
    template = op.template(NAME)
    await op.scale(NAME, 5)
    await eventually(lambda: op.replicas(NAME) == 5)
    assert_resized_in_place(op, template, bootstrap=3)
    await op.update_spec(NAME, {"replicas": 2})
    await eventually(lambda: op.replicas(NAME) == 2)
    await op.scale(NAME, 3)
    await eventually(lambda: op.replicas(NAME) == 3)
    await ticks(op, 2)
    assert_resized_in_place(op, template, bootstrap=3)
    assert len(op.statefulset_patches(NAME)) == 3
    assert op.membership.calls == []
    assert op.membership.urls == []  # not even asked for the configuration


@pytest.mark.timeout(90)
async def test_the_bootstrap_size_survives_a_resize_and_an_operator_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with mock_api_server() as server:
        async with operator_on(server, tmp_path, monkeypatch) as op:
            op.membership.replicas = lambda: op.replicas(NAME)
            await running_locks(op, 3)
            template = op.template(NAME)
            await op.scale(NAME, 5)
            await eventually(lambda: op.replicas(NAME) == 5)
            op.fake_pod(NAME, 3, ready=True)
            op.fake_pod(NAME, 4, ready=True)
            await eventually(lambda: op.membership.voters == ALL5)
            assert_resized_in_place(op, template, bootstrap=3)

        # A new operator process: nothing but what the cluster holds.
        async with operator_on(server, tmp_path, monkeypatch) as op:
            op.membership.replicas = lambda: op.replicas(NAME)
            op.membership.voters = list(ALL5)
            await ticks(op, 3)
            assert op.replicas(NAME) == 5
            assert_resized_in_place(op, template, bootstrap=3)
            await op.scale(NAME, 3)
            await eventually(lambda: op.replicas(NAME) == 3)
            assert op.membership.calls == [("DELETE", "locks-4", 5), ("DELETE", "locks-3", 5)]
            assert_resized_in_place(op, template, bootstrap=3)
            assert env(op, "RAFT_INITIAL_VOTERS") == ",".join(ALL3)


@pytest.mark.timeout(60)
async def test_a_statefulset_built_before_the_record_keeps_its_pods_as_the_bootstrap_set(
    op: Harness,
) -> None:
    legacy = build_statefulset(NAME, NAMESPACE, parse_spec({"role": "queue"}))
    del legacy["metadata"]["annotations"]
    op.server.objects["apps/v1/statefulsets", NAMESPACE, NAME] = legacy
    await op.create(NAME, {"role": "queue", "replicas": 5})
    await eventually(lambda: op.replicas(NAME) == 5)
    statefulset = op.obj("apps/v1/statefulsets", NAME)
    assert statefulset is not None
    assert statefulset["metadata"]["annotations"][BOOTSTRAP] == "3"  # its pods, recorded
    assert peers(op) == 3
    template = op.template(NAME)
    await op.scale(NAME, 1)
    await eventually(lambda: op.replicas(NAME) == 1)
    await ticks(op, 2)
    assert op.template(NAME) == template
    assert op.statefulset_patches(NAME)[-1] == ["/spec/replicas"]
