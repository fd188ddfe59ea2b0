"""Membership changes of the lock cluster, on the leader: `/raft/members` (issue 7).

Adding a node is three steps, each one configuration entry or a wait: add it as a
learner and wait for that entry to commit, wait (at most `catch_up_s`) until the
learner holds every committed entry, promote it and wait for that to commit. A retry
after a timeout finds the node already a learner and goes on from the second step.
Removing the leader is not done here: the node hands leadership over first and the
request is forwarded (see `LockNode`).

Errors come back as `ApiError`; `NotLeader` propagates so the caller can forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from distcluster_worker.lock_role.driver import RaftDriver
from distcluster_worker.lock_role.service import QuorumUnavailableError
from distcluster_worker.raft.node import (
    ConfChange,
    ConfChangeInProgress,
    InvalidConfChange,
    Membership,
    RaftNode,
)
from distcluster_worker.shell.config import NODE_ID_RE
from distcluster_worker.shell.errors import ApiError

CATCH_UP_S = 10.0


def members_view(node: RaftNode) -> dict[str, Any]:
    """`GET /raft/members`: this node's view of the configuration."""
    committed = node.committed_membership
    return {
        **membership_body(node.membership),
        "committed": membership_body(committed),
        "config_index": node.config_index,
        "leader_id": node.leader_id,
    }


def membership_body(membership: Membership) -> dict[str, list[str]]:
    return {"voters": list(membership.voters), "learners": list(membership.learners)}


def check_member_id(node_id: Any, peers: Mapping[str, str]) -> str:
    """The id from a request body, or a 400 naming what is wrong with it."""
    if not isinstance(node_id, str) or NODE_ID_RE.match(node_id) is None:
        raise ApiError(400, "invalid_conf_change", f"bad node id {node_id!r}", reason="bad_node_id")
    if node_id not in peers:
        raise ApiError(
            400,
            "unknown_peer",
            f"{node_id!r} is neither in PEERS nor discovered (is it running?)",
        )
    return node_id


class MemberChanges:
    """The leader's side of `POST` and `DELETE /raft/members`."""

    def __init__(self, driver: RaftDriver, *, commit_timeout_s: float, tick_s: float) -> None:
        self._driver = driver
        self._commit_timeout_s = commit_timeout_s
        self._tick_s = tick_s

    async def add(self, node_id: str, catch_up_s: float = CATCH_UP_S) -> dict[str, Any]:
        node = self._driver.node
        if not node.membership.is_learner(node_id):
            await self._change(ConfChange("add_learner", node_id))
        await self._wait_caught_up(node_id, catch_up_s)
        await self._change(ConfChange("promote", node_id))
        return membership_body(node.membership)

    async def remove(self, node_id: str) -> dict[str, Any]:
        if not self._driver.node.membership.is_member(node_id):
            raise ApiError(404, "not_member", f"{node_id!r} is not a member")
        await self._change(ConfChange("remove", node_id))
        return membership_body(self._driver.node.membership)

    def transfer_target(self) -> str | None:
        """A voter other than this leader holding the whole log, if there is one."""
        node = self._driver.node
        progress = node.status().get("progress", {})
        candidates: list[tuple[int, str]] = [
            (int(p["match"]), str(peer))
            for peer, p in progress.items()
            if peer in node.voters and peer != node.node_id
        ]
        if not candidates:
            return None
        return max(candidates)[1]

    async def _change(self, change: ConfChange) -> None:
        try:
            index = await self._driver.propose_conf_change(change)
        except ConfChangeInProgress as exc:
            raise ApiError(409, "conf_change_in_progress", str(exc), reason=exc.reason) from None
        except InvalidConfChange as exc:
            raise ApiError(400, "invalid_conf_change", str(exc), reason=exc.reason) from None
        try:
            async with asyncio.timeout(self._commit_timeout_s):
                await self._driver.wait_applied(index)
        except TimeoutError:
            raise QuorumUnavailableError(f"{change.op} of {change.node_id} not committed") from None

    async def _wait_caught_up(self, node_id: str, within_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not self._driver.node.learner_caught_up(node_id):
            if loop.time() >= deadline:
                raise ApiError(
                    504, "timeout", f"learner {node_id} did not catch up within {within_s} s"
                )
            await asyncio.sleep(self._tick_s)
