"""Settings of the queue role, read from ``QUEUE_*`` environment variables.

The shell's ``Settings`` holds what every role shares; the queue's own knobs live here so
the role can be added without touching the shell. They are validated once, when the node
is built, and a bad value stops the node with one sentence per bad variable (the same
``ConfigError`` the shell raises, so the CLI reports it the same way).

Bounds that are not obvious:

* ``QUEUE_MAX_BLOCK_MS`` is at most 1500: a blocking ``XREADGROUP`` holds a Redis socket,
  and the shell's Redis client times a socket out after 2 s.
* ``QUEUE_MAX_VISIBILITY_MS`` is at most one day, because ``nack`` marks entries as idle
  for ``NACK_IDLE_MS`` (11.5 days), which must exceed any visibility timeout.
* Heartbeats must be more frequent than suspicion, and suspicion earlier than death.
* ``QUEUE_IDLE_SCAN_INTERVAL_MS`` (at most a minute) is how much later than
  ``visibility_ms`` an unacked entry may be redelivered (see ``idle_scans.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distcluster_worker.shell.config import load_role_settings

#: Idle time `nack` gives entries so any consumer's next visibility check claims them.
NACK_IDLE_MS = 1_000_000_000
ENV_PREFIX = "QUEUE_"


class QueueSettings(BaseModel):
    """Every ``QUEUE_*`` setting with its default; see the README table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_ms: int = Field(default=500, gt=0)
    suspect_after_ms: int = Field(default=1500, gt=0)
    dead_after_ms: int = Field(default=3000, gt=0)
    vnodes: int = Field(default=1024, ge=1, le=65536)
    max_deliveries: int = Field(default=5, ge=1)
    visibility_ms: int = Field(default=30_000, gt=0)
    max_visibility_ms: int = Field(default=86_400_000, gt=0, le=86_400_000)
    max_block_ms: int = Field(default=1000, ge=0, le=1500)
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    maxlen: int = Field(default=100_000, ge=1)
    dead_letter_maxlen: int = Field(default=100_000, ge=1)
    idempotency_ttl_ms: int = Field(default=86_400_000, gt=0)
    trim_interval_ms: int = Field(default=1000, ge=0)
    idle_scan_interval_ms: int = Field(default=100, ge=0, le=60_000)

    @model_validator(mode="after")
    def _check_relations(self) -> QueueSettings:
        problems = []
        if not self.heartbeat_ms < self.suspect_after_ms < self.dead_after_ms:
            problems.append(
                "QUEUE_HEARTBEAT_MS < QUEUE_SUSPECT_AFTER_MS < QUEUE_DEAD_AFTER_MS must hold, got "
                f"{self.heartbeat_ms}, {self.suspect_after_ms}, {self.dead_after_ms}"
            )
        if self.visibility_ms > self.max_visibility_ms:
            problems.append(
                f"QUEUE_VISIBILITY_MS: must not exceed QUEUE_MAX_VISIBILITY_MS "
                f"({self.max_visibility_ms}), got {self.visibility_ms}"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


def load_queue_settings(env: Mapping[str, str] | None = None) -> QueueSettings:
    """Read ``QUEUE_*`` from ``env`` (default: the process environment).

    Raises ConfigError naming every bad variable.
    """
    return load_role_settings(QueueSettings, ENV_PREFIX, env)
