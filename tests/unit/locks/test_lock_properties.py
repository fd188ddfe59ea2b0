"""Property tests: random histories keep every invariant, and replicas never diverge.

Histories mix all five ops over few owners, resources and request ids (so retries,
conflicts, queues and deadlocks are common), with time moving by random steps and the odd
malformed command. A release, renew or cancel usually targets a live holder or waiter
(its `pick` is resolved against the table just before applying), so they succeed often
enough to matter.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distcluster_worker.locks import Granted, LockTable, Outcome, Released

OWNERS = st.sampled_from(["a", "b", "c"])
RESOURCES = st.sampled_from(["r1", "r2", "r3"])
# None: a fresh id (made from the entry index); else one of a few ids used again and again
# (a retry, or a client reusing an id).
REQUEST_IDS = st.sampled_from([None] * 6 + ["q0", "q1", "q2"])
# None: use the fields as given; else aim at a live holder (a waiter, for cancel) chosen
# by `pick` when the command runs.
PICK = st.one_of(st.none(), st.integers(0, 20), st.integers(0, 20))

ACQUIRE = st.fixed_dictionaries(
    {
        "op": st.just("acquire"),
        "request_id": REQUEST_IDS,
        "resource": RESOURCES,
        "owner": OWNERS,
        "mode": st.sampled_from(["exclusive", "shared"]),
        "ttl_ms": st.integers(1, 5_000),
        "wait_ms": st.sampled_from([0, 1, 300, 1_500, 5_000, 20_000]),
    }
)
RELEASE = st.fixed_dictionaries(
    {
        "op": st.just("release"),
        "request_id": REQUEST_IDS,
        "resource": RESOURCES,
        "owner": OWNERS,
        "token": st.integers(0, 40),
        "pick": PICK,
    }
)
RENEW = st.fixed_dictionaries(
    {
        "op": st.just("renew"),
        "request_id": REQUEST_IDS,
        "resource": RESOURCES,
        "owner": OWNERS,
        "token": st.integers(0, 40),
        "pick": PICK,
        "ttl_ms": st.integers(1, 2_000),
    }
)
CANCEL = st.fixed_dictionaries({"op": st.just("cancel"), "request_id": REQUEST_IDS, "pick": PICK})
EXPIRE = st.fixed_dictionaries({"op": st.just("expire")})
# Marked so `_resolve` does not stamp `now_ms`, which would fix the last one.
MALFORMED = st.sampled_from(
    [
        {"op": "acquire", "malformed": True},
        {"op": "renew", "ttl_ms": 0, "malformed": True},
        {"op": "zap", "malformed": True},
        {"op": "expire", "malformed": True},
    ]
)
_BY_OP = {
    "acquire": ACQUIRE,
    "release": RELEASE,
    "renew": RENEW,
    "cancel": CANCEL,
    "expire": EXPIRE,
    "malformed": MALFORMED,
}
_OPS = ["acquire"] * 6 + ["release"] * 2 + ["renew", "cancel", "expire", "malformed"]
COMMAND = st.sampled_from(_OPS).flatmap(lambda op: _BY_OP[op])
# (milliseconds to advance, Raft index gap, command); time may also step backwards a bit.
STEP = st.tuples(st.sampled_from([-100, 0, 0, 10, 50, 200, 700]), st.integers(1, 3), COMMAND)
HISTORY = st.lists(STEP, min_size=20, max_size=120)


def _resolve(table: LockTable, index: int, now_ms: int, command: dict[str, Any]) -> dict[str, Any]:
    """Stamp `now_ms`, fill a fresh request id, and resolve a `pick` to a live holder."""
    cmd = {**command}
    if "request_id" in cmd and cmd["request_id"] is None:
        cmd["request_id"] = f"fresh{index}"
    if "malformed" not in cmd:
        cmd["now_ms"] = now_ms
    pick = cmd.pop("pick", None)
    if pick is None:
        return cmd
    if cmd["op"] == "cancel":
        waiters = [w["request_id"] for r in table.resources() for w in table.view(r)["waiters"]]
        if waiters:
            cmd["request_id"] = waiters[pick % len(waiters)]
        return cmd
    holders = [(r, h) for r in table.resources() for h in table.view(r)["holders"]]
    if holders:
        resource, hold = holders[pick % len(holders)]
        cmd.update(resource=resource, owner=hold["owner"], token=hold["token"])
    return cmd


def _run(
    history: list[Any], tables: list[LockTable], restore_at: int = -1
) -> list[tuple[int, list[Outcome]]]:
    """Feed `history` to every table (each restored from its snapshot at `restore_at`)."""
    index, now_ms = 0, 1_000
    outputs: list[tuple[int, list[Outcome]]] = []
    for step, (delta_ms, gap, command) in enumerate(history):
        if step == restore_at:
            tables = [LockTable.restore(t.snapshot()) for t in tables]
        index, now_ms = index + gap, max(0, now_ms + delta_ms)
        cmd = _resolve(tables[0], index, now_ms, command)
        results = [t.apply(index, cmd) for t in tables]
        for table, out in zip(tables, results, strict=True):
            table.check_invariants()
            _check_outputs(table, index, out)
        assert all(out == results[0] for out in results)
        outputs.append((index, results[0]))
    assert len({t.snapshot() for t in tables}) == 1
    return outputs


def _check_outputs(table: LockTable, index: int, out: list[Outcome]) -> None:
    """Checks from outside the table: new grants carry this index and are still held.

    The held mode may be stronger than granted: a shared hand-over followed, in the same
    entry, by that owner's in-place upgrade (which keeps the entry's token).
    """
    deadline = table.next_deadline_ms()
    assert deadline is None or deadline > table.clock_ms
    # A command may release, in the same entry, the grant that the entry's expiries just
    # handed over (its token is the entry's index, which a generated release can hit).
    released = {(o.resource, o.owner, o.token) for o in out if isinstance(o, Released)}
    for outcome in out:
        if not isinstance(outcome, Granted):
            continue
        assert outcome.token <= index
        if (outcome.resource, outcome.owner, outcome.token) in released:
            continue
        if outcome.token == index:
            held = {(h["owner"], h["token"]) for h in table.view(outcome.resource)["holders"]}
            assert (outcome.owner, index) in held


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(HISTORY)
def test_random_histories_keep_every_invariant(history: list[Any]) -> None:
    _run(history, [LockTable()])


@SETTINGS
@given(HISTORY, st.data())
def test_a_replica_restored_midway_gives_identical_outcomes(
    history: list[Any], data: st.DataObject
) -> None:
    restore_at = data.draw(st.integers(0, len(history)))
    reference = _run(history, [LockTable()])
    assert _run(history, [LockTable(), LockTable()], restore_at) == reference


@SETTINGS
@given(HISTORY)
def test_tokens_strictly_increase_per_resource_across_entries(history: list[Any]) -> None:
    last: dict[str, int] = {}
    for index, out in _run(history, [LockTable(dedup_capacity=4)]):
        fresh = {o.resource for o in out if isinstance(o, Granted) and o.token == index}
        for resource in fresh:
            assert index > last.get(resource, 0)
            last[resource] = index
        for outcome in out:
            if isinstance(outcome, Granted) and outcome.token != index:
                # A replay or a re-acquire: a token granted earlier, never a new one.
                assert outcome.token <= last[outcome.resource]
