"""Settings of the lock_manager role that the shell's `Settings` does not hold.

They are read from the environment when the node is built, like the queue's and the
cache's, so the role adds knobs without touching the shell; a bad value stops the node
with one sentence per bad variable.

* `RAFT_TRANSPORT` chooses how Raft messages travel between nodes: `stream` (default) keeps
  one WebSocket per directed peer link and writes batches of messages as frames on it;
  `http` POSTs each batch to the peer's `/raft-vote` or `/raft-append`. Every node serves
  all three endpoints whatever its own choice, so nodes with different settings still form
  one cluster, and a benchmark can compare the two on the same machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from distcluster_worker.shell.config import load_role_settings

ENV_PREFIX = "RAFT_"


class LockRoleSettings(BaseModel):
    """Every lock-role setting read here, with its default; see the README table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["stream", "http"] = "stream"


def load_lock_settings(env: Mapping[str, str] | None = None) -> LockRoleSettings:
    """Read the settings from `env` (default: the process environment); ConfigError if bad."""
    return load_role_settings(LockRoleSettings, ENV_PREFIX, env)
