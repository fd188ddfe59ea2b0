"""Per-key fences that stop a late reply from installing a copy it must not install.

Replies travel concurrently with the home's next transaction on the key, so a node can see
an invalidation (or a downgrade) before the reply of an older grant arrives. Grants are
ordered ``(epoch, txn)`` pairs: the home's incarnation, then its transaction number, so a
restarted home's grants order after all of its previous life's. An invalidation by write
``w`` fences every grant older than ``w``: such a reply carries a value the write replaced
(``w``'s own grant passes: its writer may be among the nodes ``w`` invalidates).
A downgrade (a peer read the line while this node's exclusive grant was in flight) turns
an older exclusive grant into S. A fence can be forgotten ``keep_ms`` after it was set: a
reply that old is past its lease, and the copy table refuses it for that reason alone.
"""

from __future__ import annotations

Grant = tuple[int, int]


class Fences:
    def __init__(self, keep_ms: int) -> None:
        if keep_ms <= 0:
            raise ValueError("keep_ms must be positive")
        self.keep_ms = keep_ms
        self._inval: dict[str, tuple[Grant, int]] = {}
        self._down: dict[str, tuple[Grant, int]] = {}

    def invalidated(self, key: str, txn: Grant, now_ms: int) -> None:
        _raise(self._inval, key, txn, now_ms)

    def downgraded(self, key: str, txn: Grant, now_ms: int) -> None:
        _raise(self._down, key, txn, now_ms)

    def admits(self, key: str, grant: Grant) -> bool:
        """Whether a copy granted by `grant` may be installed: not older than any write
        seen invalidating (a write's own grant is the write's txn, so it passes its own
        invalidation of the writer's older copy)."""
        fence = self._inval.get(key)
        return fence is None or grant >= fence[0]

    def must_share(self, key: str, grant: Grant) -> bool:
        """Whether an exclusive copy granted by `grant` must be installed as S."""
        fence = self._down.get(key)
        return fence is not None and grant < fence[0]

    def prune(self, now_ms: int) -> None:
        for table in (self._inval, self._down):
            for key in [k for k, (_, at) in table.items() if at + self.keep_ms <= now_ms]:
                del table[key]

    def __len__(self) -> int:
        return len(self._inval) + len(self._down)


def _raise(table: dict[str, tuple[Grant, int]], key: str, txn: Grant, now_ms: int) -> None:
    old = table.get(key)
    if old is None or txn >= old[0]:
        table[key] = (txn, now_ms)
