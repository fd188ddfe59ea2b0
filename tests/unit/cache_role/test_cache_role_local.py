"""Pure parts of the cache role: the local cache, settings, request models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distcluster_worker.cache_role.local import LocalCache
from distcluster_worker.cache_role.models import BusRead, HomeRenew, PutBody, key_problem
from distcluster_worker.cache_role.settings import load_cache_settings
from distcluster_worker.coherence import CopyTable, MesiState
from distcluster_worker.eviction import Line, LineStore
from distcluster_worker.shell.config import ConfigError

S, E, M = MesiState.S, MesiState.E, MesiState.M


def cache(capacity: int = 3, max_bytes: int | None = None) -> LocalCache:
    store = LineStore(capacity, "lru", max_bytes=max_bytes)
    return LocalCache(store, CopyTable(1000, fence_keep_ms=100))


def put(c: LocalCache, key: str, txn: int, state: MesiState = S, now: int = 0) -> Line | None:
    ticket = c.begin_read(key, "home", now)
    return c.install(ticket, Line.of("v", state, 1), (1, txn), now)[0]


def test_lookup_respects_serve_time_and_drops_the_line() -> None:
    c = cache()
    put(c, "k", 1, now=0)
    assert c.lookup("k", 999) is not None
    assert c.lookup("k", 1000) is None
    assert "k" not in c.store
    c.check_invariants()


def test_supply_downgrades_exclusive() -> None:
    c = cache()
    put(c, "k", 1, E)
    supplied = c.supply("k", (1, 2), downgrade=True, now_ms=1)
    assert supplied is not None and supplied.value == "v" and supplied.state is S
    line = c.store.peek("k")
    assert line is not None and line.state is S


def test_write_drops_the_line_at_once_and_installs_its_own_grant() -> None:
    c = cache()
    put(c, "k", 1)
    ticket = c.begin_write("k", "home", 5)
    assert c.lookup("k", 5) is None and "k" not in c.store
    assert ticket.dropped == (1, 1)
    line, _ = c.install(ticket, Line.of("new", M, 2), (1, 2), 6)
    assert line is not None and c.lookup("k", 6) is not None
    c.check_invariants()


def test_invalidation_and_refused_renewal_remove_value_and_record() -> None:
    c = cache()
    put(c, "a", 1)
    put(c, "b", 2)
    assert c.invalidate("a", (1, 3), 1) is not None
    assert c.renewals(1, within_ms=2000) == {"home": [("b", (1, 2))]}
    assert c.renewed([(("b", (1, 2)), False)], sent_ms=1, now_ms=2) == 1
    assert len(c.store) == 0
    c.check_invariants()


def test_eviction_returns_held_and_capacity_holds() -> None:
    c = cache(capacity=2)
    evicted = []
    for i in range(5):
        _, gone = c.install(c.begin_write(f"k{i}", "home", 0), Line.of("v", M, 1), (1, i + 1), 0)
        evicted.extend(gone)
    assert len(c.store) == 2
    assert [e.key for e in evicted] == ["k0", "k1", "k2"]
    assert all(e.line.dirty and e.held.home == "home" for e in evicted)
    assert [line["key"] for line in c.lines(0)] == ["k3", "k4"]
    c.check_invariants()


def test_a_line_over_the_byte_budget_is_not_cached() -> None:
    c = cache(max_bytes=3)
    ticket = c.begin_read("k", "home", 0)
    assert c.install(ticket, Line.of("long", S, 1), (1, 1), 0) == (None, [])
    assert c.held("k") is None
    c.check_invariants()


def test_purge_expired() -> None:
    c = cache()
    put(c, "a", 1, now=0)
    put(c, "b", 2, now=500)
    assert c.purge_expired(1000) == 1
    assert c.copies.keys() == ["b"]
    c.check_invariants()


def test_settings_defaults_and_errors() -> None:
    s = load_cache_settings({})
    assert (s.capacity, s.policy, s.lease_ms, s.max_bytes) == (1000, "lru", 2000, None)
    assert s.serve_ms < s.lease_ms
    assert s.renew_every_ms < s.renew_within_ms < s.serve_ms  # two rounds before expiry
    assert s.grace_ms > s.lease_ms
    assert load_cache_settings({"CACHE_POLICY": "lfu", "CACHE_MAX_BYTES": "10"}).max_bytes == 10
    with pytest.raises(ConfigError):
        load_cache_settings({"CACHE_POLICY": "fifo"})
    with pytest.raises(ConfigError):
        load_cache_settings({"CACHE_HEARTBEAT_MS": "5000"})


def test_models_are_strict() -> None:
    with pytest.raises(ValidationError):
        PutBody.model_validate({"value": 1})
    with pytest.raises(ValidationError):
        BusRead.model_validate({"key": "bad key", "txn": [1, 2]})
    with pytest.raises(ValidationError):
        BusRead.model_validate({"key": "k", "txn": [1]})
    assert BusRead.model_validate({"key": "a.b:c-d_1", "txn": [1, 2]}).downgrade is False
    renew = {"node": "n1", "keys": ["a", "b"], "grants": [[1, 2], [1, 3]]}
    assert HomeRenew.model_validate(renew).keys == ["a", "b"]
    with pytest.raises(ValidationError):
        HomeRenew.model_validate({**renew, "grants": [[1, 2]]})


def test_reserved_and_invalid_keys() -> None:
    assert key_problem("user:42") is None
    assert key_problem("stats") is not None and "reserved" in str(key_problem("stats"))
    assert key_problem("lines") is not None
    assert key_problem("stats2") is None
    assert key_problem("bad key") is not None and key_problem("x" * 201) is not None
