"""A driver for lock table tests: it numbers entries, stamps time and checks invariants.

Tests read as scenarios: `d.acquire("r", "a")`, `d.at(1500).release(...)`. The driver
hands out increasing Raft indexes and request ids so each test states only what matters,
and checks the table's invariants after every entry.
"""

from __future__ import annotations

from typing import Any

from distcluster_worker.locks import LockTable, Outcome


class Driver:
    def __init__(self, table: LockTable | None = None) -> None:
        self.table = table if table is not None else LockTable()
        self.index = self.table.last_index
        self.now_ms = 1_000
        self._ids = 0

    def at(self, now_ms: int) -> Driver:
        self.now_ms = now_ms
        return self

    def rid(self) -> str:
        self._ids += 1
        return f"req-{self._ids}"

    def apply(self, command: dict[str, Any]) -> list[Outcome]:
        self.index += 1
        out = self.table.apply(self.index, command)
        self.table.check_invariants()
        return out

    def acquire(
        self,
        resource: str,
        owner: str,
        mode: str = "exclusive",
        *,
        ttl_ms: int = 10_000,
        wait_ms: int = 0,
        request_id: str | None = None,
    ) -> list[Outcome]:
        return self.apply(
            {
                "op": "acquire",
                "request_id": request_id or self.rid(),
                "resource": resource,
                "owner": owner,
                "mode": mode,
                "ttl_ms": ttl_ms,
                "wait_ms": wait_ms,
                "now_ms": self.now_ms,
            }
        )

    def release(
        self, resource: str, owner: str, token: int, *, request_id: str | None = None
    ) -> list[Outcome]:
        return self.apply(
            {
                "op": "release",
                "request_id": request_id or self.rid(),
                "resource": resource,
                "owner": owner,
                "token": token,
                "now_ms": self.now_ms,
            }
        )

    def renew(
        self, resource: str, owner: str, token: int, ttl_ms: int, *, request_id: str | None = None
    ) -> list[Outcome]:
        return self.apply(
            {
                "op": "renew",
                "request_id": request_id or self.rid(),
                "resource": resource,
                "owner": owner,
                "token": token,
                "ttl_ms": ttl_ms,
                "now_ms": self.now_ms,
            }
        )

    def cancel(self, request_id: str) -> list[Outcome]:
        return self.apply({"op": "cancel", "request_id": request_id, "now_ms": self.now_ms})

    def expire(self) -> list[Outcome]:
        return self.apply({"op": "expire", "now_ms": self.now_ms})
