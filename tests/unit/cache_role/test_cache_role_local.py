"""Pure parts of the cache role: fences, the local cache, settings, request models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distcluster_worker.cache_role.fences import Fences
from distcluster_worker.cache_role.local import Held, LocalCache
from distcluster_worker.cache_role.models import BusRead, PutBody
from distcluster_worker.cache_role.settings import load_cache_settings
from distcluster_worker.coherence import MesiState
from distcluster_worker.eviction import Line, LineStore
from distcluster_worker.shell.config import ConfigError

S, E, M = MesiState.S, MesiState.E, MesiState.M


def cache(capacity: int = 3) -> LocalCache:
    return LocalCache(LineStore(capacity, "lru"), Fences(keep_ms=100))


def held(txn: int, expires: int = 1000) -> Held:
    return Held((1, txn), expires, "home")


def test_fences_order_and_prune() -> None:
    f = Fences(keep_ms=10)
    f.invalidated("k", (1, 5), 0)
    assert not f.admits("k", (1, 4)) and f.admits("k", (1, 6)) and f.admits("x", (0, 0))
    f.downgraded("k", (1, 7), 0)
    assert f.must_share("k", (1, 6)) and not f.must_share("k", (1, 8))
    f.prune(10)
    assert len(f) == 0 and f.admits("k", (1, 1))


def test_lookup_respects_lease() -> None:
    c = cache()
    c.install("k", Line.of("v", S, 1), held(1, expires=50), now_ms=0)
    assert c.lookup("k", 49) is not None
    assert c.lookup("k", 50) is None
    assert "k" not in c.store


def test_install_refuses_fenced_older_and_expired() -> None:
    c = cache()
    c.invalidate("k", (1, 5), 0)
    assert c.install("k", Line.of("old", S, 1), held(4), 0)[0] is None
    assert c.install("k", Line.of("new", M, 2), held(6), 0)[0] is not None
    assert c.install("k", Line.of("older", S, 1), held(5), 0)[0] is None
    assert c.install("j", Line.of("v", S, 1), held(9, expires=5), 5)[0] is None


def test_downgrade_before_install_gives_s() -> None:
    c = cache()
    assert c.supply("k", (1, 8), downgrade=True, now_ms=0) is None
    line, _ = c.install("k", Line.of("v", M, 1), held(7), 0)
    assert line is not None and line.state is S


def test_supply_downgrades_exclusive() -> None:
    c = cache()
    c.install("k", Line.of("v", E, 1), held(1), 0)
    supplied = c.supply("k", (1, 2), downgrade=True, now_ms=1)
    assert supplied is not None and supplied.value == "v"
    assert c.store.peek("k") is not None and c.store.peek("k").state is S  # type: ignore[union-attr]


def test_eviction_returns_held_and_capacity_holds() -> None:
    c = cache(capacity=2)
    evicted = []
    for i in range(5):
        _, gone = c.install(f"k{i}", Line.of("v", M, 1), held(i + 1), 0)
        evicted.extend(gone)
    assert len(c.store) == 2
    assert [e.key for e in evicted] == ["k0", "k1", "k2"]
    assert all(e.line.dirty and e.held.home == "home" for e in evicted)
    assert [line["key"] for line in c.lines(0)] == ["k3", "k4"]


def test_settings_defaults_and_errors() -> None:
    s = load_cache_settings({})
    assert (s.capacity, s.policy, s.lease_ms, s.max_bytes) == (1000, "lru", 2000, None)
    assert s.serve_ms < s.lease_ms
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
