"""Settings of the cache role, read from ``CACHE_*`` environment variables.

Same conventions as the queue role: validated once when the node is built; a bad value
raises the shell's ``ConfigError`` with one sentence per bad variable. Empty means unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distcluster_worker.shell.config import load_role_settings

ENV_PREFIX = "CACHE_"


class CacheSettings(BaseModel):
    """Every ``CACHE_*`` setting with its default; see the role's docs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: int = Field(default=1000, ge=1)
    max_bytes: int | None = Field(default=None, gt=0)
    policy: Literal["lru", "lfu"] = "lru"
    lease_ms: int = Field(default=2000, ge=100)
    max_value_bytes: int = Field(default=16384, ge=1, le=1_000_000)
    txn_timeout_ms: int = Field(default=5000, gt=0)
    heartbeat_ms: int = Field(default=500, gt=0)
    suspect_after_ms: int = Field(default=1500, gt=0)
    dead_after_ms: int = Field(default=3000, gt=0)
    vnodes: int = Field(default=1024, ge=1, le=65536)
    slot_lease_ms: int = Field(default=3000, ge=200)

    @model_validator(mode="after")
    def _check_relations(self) -> CacheSettings:
        if not self.heartbeat_ms < self.suspect_after_ms < self.dead_after_ms:
            raise ValueError(
                "CACHE_HEARTBEAT_MS < CACHE_SUSPECT_AFTER_MS < CACHE_DEAD_AFTER_MS must hold, got "
                f"{self.heartbeat_ms}, {self.suspect_after_ms}, {self.dead_after_ms}"
            )
        if self.slot_lease_ms < self.lease_ms:
            raise ValueError(
                "CACHE_SLOT_LEASE_MS must be at least CACHE_LEASE_MS (a home renews copies only "
                "while it holds their slot: a shorter slot lease would cut hits during a Redis "
                "outage below one copy lease), got "
                f"{self.slot_lease_ms} < {self.lease_ms}"
            )
        return self

    @property
    def slot_round_ms(self) -> int:
        """How often a node runs its slot round (acquire, renew, release) in Redis: four
        times per slot lease, so one slow or lost round costs no slot."""
        return self.slot_lease_ms // 4

    @property
    def serve_ms(self) -> int:
        """How long a node serves a copy, counted from when it sent the request that got it
        (or renewed it): the home's lease minus a 10% margin for clock-rate drift."""
        return self.lease_ms - max(1, self.lease_ms // 10)

    @property
    def renew_every_ms(self) -> int:
        """How often a node sends each home its renewal batch: four times per lease."""
        return max(10, self.lease_ms // 4)

    @property
    def renew_within_ms(self) -> int:
        """A copy is renewed when its serve time ends within this: half of `serve_ms`,
        which is two renewal rounds, so one lost round costs no copy."""
        return self.serve_ms // 2

    @property
    def grace_ms(self) -> int:
        """How long at least a home that starts, sees its ring change or wakes from a stall
        grants nothing and completes no write: one lease for the copies a previous home
        granted, plus two heartbeats for the peers that still send that home's keys
        elsewhere until they hear of the change. (It also waits until every live peer
        acknowledged it, and a lease more: see ``home.py``.)"""
        return self.lease_ms + 2 * self.heartbeat_ms


def load_cache_settings(env: Mapping[str, str] | None = None) -> CacheSettings:
    """Read ``CACHE_*`` from ``env`` (default: the process environment).

    Raises ConfigError naming every bad variable.
    """
    return load_role_settings(CacheSettings, ENV_PREFIX, env)
