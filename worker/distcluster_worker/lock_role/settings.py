"""Settings of the lock_manager role that the shell's `Settings` does not hold.

They are read from the environment when the node is built, like the queue's and the
cache's, so the role adds knobs without touching the shell; a bad value stops the node
with one sentence per bad variable.

* `RAFT_TRANSPORT` chooses how Raft messages travel between nodes: `stream` (default) keeps
  one WebSocket per directed peer link and writes batches of messages as frames on it;
  `http` POSTs each batch to the peer's `/raft-vote` or `/raft-append`. Every node serves
  all three endpoints whatever its own choice, so nodes with different settings still form
  one cluster, and a benchmark can compare the two on the same machine.
* `RAFT_JOIN` (default false): a node whose Raft storage is empty starts with no
  configuration (`RaftConfig(join=True)`) and waits to be added with `POST /raft/members`
  on the cluster; with state in Redis the setting changes nothing.
* `RAFT_INITIAL_VOTERS` (default: this node and every id in `PEERS`): the comma-separated
  bootstrap voters of a fresh cluster, so `PEERS` may list nodes to be added later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from distcluster_worker.shell.config import load_role_settings

ENV_PREFIX = "RAFT_"


class LockRoleSettings(BaseModel):
    """Every lock-role setting read here, with its default; see the README table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["stream", "http"] = "stream"
    join: bool = False
    initial_voters: str = ""

    def bootstrap_voters(self, node_id: str, peers: Iterable[str]) -> tuple[str, ...]:
        """The bootstrap voters: `initial_voters` when set, else this node and its peers."""
        listed = [v.strip() for v in self.initial_voters.split(",") if v.strip()]
        return tuple(sorted(set(listed) if listed else {node_id, *peers}))


def load_lock_settings(env: Mapping[str, str] | None = None) -> LockRoleSettings:
    """Read the settings from `env` (default: the process environment); ConfigError if bad."""
    return load_role_settings(LockRoleSettings, ENV_PREFIX, env)
