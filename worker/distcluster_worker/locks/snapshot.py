"""Snapshot text of a lock table: canonical JSON, and a strict way back.

Canonical (sorted keys, fixed separators, resources sorted, queues and the dedup map in
their own order) so that two replicas in the same state produce byte-identical snapshots,
which the simulator compares. Derived indexes and the deadline heap are left out and
rebuilt on restore. Decoding checks every field's type and raises LockSnapshotError, so a
corrupt snapshot is refused at restore time rather than misbehaving later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from distcluster_worker.locks.errors import LockSnapshotError
from distcluster_worker.locks.outcomes import MODES, Mode, outcome_from_dict
from distcluster_worker.locks.state import Hold, Resource, TableState, Waiter

VERSION = 1


def encode(state: TableState) -> str:
    resources = [_encode_resource(state.resources[name]) for name in sorted(state.resources)]
    body = {
        "version": VERSION,
        "dedup_capacity": state.dedup_capacity,
        "clock_ms": state.clock_ms,
        "last_index": state.last_index,
        "token_floor": state.token_floor,
        "resources": resources,
        "dedup": [[rid, outcome.to_dict()] for rid, outcome in state.dedup.items()],
    }
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def _encode_resource(res: Resource) -> dict[str, Any]:
    return {
        "name": res.name,
        "last_token": res.last_token,
        "holders": [
            [h.owner, h.mode, h.token, h.expires_at_ms]
            for h in (res.holders[owner] for owner in sorted(res.holders))
        ],
        "queue": [[w.request_id, w.owner, w.mode, w.ttl_ms, w.deadline_ms] for w in res.queue],
    }


def decode(data: str) -> TableState:
    """Parse snapshot text into a state with rebuilt indexes; LockSnapshotError if bad."""
    try:
        body = orjson.loads(data)
        state = _decode_body(body)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        if isinstance(err, LockSnapshotError):
            raise
        raise LockSnapshotError(f"bad lock table snapshot: {err}") from err
    state.rebuild_indexes()
    return state


def _decode_body(body: Any) -> TableState:
    if not isinstance(body, Mapping) or body.get("version") != VERSION:
        raise LockSnapshotError("not a version 1 lock table snapshot")
    state = TableState(
        dedup_capacity=_int(body["dedup_capacity"]),
        clock_ms=_int(body["clock_ms"]),
        last_index=_int(body["last_index"]),
        token_floor=_int(body["token_floor"]),
    )
    for raw in _list(body["resources"]):
        res = _decode_resource(raw)
        if res.name in state.resources:
            raise LockSnapshotError(f"resource {res.name!r} appears twice")
        state.resources[res.name] = res
    for item in _list(body["dedup"]):
        request_id, outcome = _list(item)
        state.dedup[_str(request_id)] = outcome_from_dict(outcome)
    return state


def _decode_resource(raw: Any) -> Resource:
    if not isinstance(raw, Mapping):
        raise LockSnapshotError("resource entry is not an object")
    res = Resource(_str(raw["name"]), _int(raw["last_token"]))
    for item in _list(raw["holders"]):
        owner, mode, token, expires_at_ms = _list(item)
        res.holders[_str(owner)] = Hold(_str(owner), _mode(mode), _int(token), _int(expires_at_ms))
    for item in _list(raw["queue"]):
        rid, owner, mode, ttl_ms, deadline_ms = _list(item)
        res.queue.append(
            Waiter(_str(rid), _str(owner), _mode(mode), _int(ttl_ms), _int(deadline_ms))
        )
    return res


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LockSnapshotError(f"expected a non-negative integer, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise LockSnapshotError(f"expected a string, got {value!r}")
    return value


def _mode(value: Any) -> Mode:
    for mode in MODES:
        if value == mode:
            return mode
    raise LockSnapshotError(f"unknown mode {value!r}")


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise LockSnapshotError(f"expected a list, got {type(value).__name__}")
    return value
