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
  on the cluster; with state in Redis the setting changes nothing. `auto`: join when this
  node is not one of the bootstrap voters, bootstrap when it is; so one pod template (or
  one compose service) serves the first nodes of a cluster and every node added later.
* `RAFT_INITIAL_VOTERS` (default: this node and every id in `PEERS`): the comma-separated
  bootstrap voters of a fresh cluster, so `PEERS` may list nodes to be added later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from distcluster_worker.shell.config import load_role_settings

ENV_PREFIX = "RAFT_"
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class LockRoleSettings(BaseModel):
    """Every lock-role setting read here, with its default; see the README table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["stream", "http"] = "stream"
    join: bool | Literal["auto"] = False
    initial_voters: str = ""

    @field_validator("join", mode="before")
    @classmethod
    def _join_word(cls, value: object) -> object:
        """One sentence for a bad value instead of one per member of the union."""
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        if word == "auto":
            return "auto"
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError("must be true, false or auto")

    @model_validator(mode="after")
    def _auto_needs_voters(self) -> LockRoleSettings:
        if self.join == "auto" and not self.initial_voters.strip():
            raise ValueError(
                "RAFT_JOIN: auto needs RAFT_INITIAL_VOTERS (without it every node counts "
                "itself a bootstrap voter, so none would ever join)"
            )
        return self

    def joins(self, node_id: str, voters: Iterable[str], *, empty: bool) -> bool:
        """Whether the node starts in join mode (see `RAFT_JOIN` in the module docstring)."""
        outsider = node_id not in voters
        if self.join == "auto":
            return outsider
        return self.join and (empty or outsider)

    def bootstrap_voters(self, node_id: str, peers: Iterable[str]) -> tuple[str, ...]:
        """The bootstrap voters: `initial_voters` when set, else this node and its peers."""
        listed = [v.strip() for v in self.initial_voters.split(",") if v.strip()]
        return tuple(sorted(set(listed) if listed else {node_id, *peers}))


def load_lock_settings(env: Mapping[str, str] | None = None) -> LockRoleSettings:
    """Read the settings from `env` (default: the process environment); ConfigError if bad."""
    return load_role_settings(LockRoleSettings, ENV_PREFIX, env)
