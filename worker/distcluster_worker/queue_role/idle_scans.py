"""When a consume may skip the scan for entries idle past their visibility timeout.

Every consume used to run ``XPENDING ... IDLE visibility_ms`` over the group's pending
list. That scan walks the pending list until it finds ``count`` idle entries, so with
many entries in flight and none idle it reads the whole list on every consume, and at a
few hundred consumes a second it is most of the work of a busy topic. Yet an entry only
becomes idle past ``visibility_ms`` once; nothing is gained by looking for it again a
millisecond after a scan that found every idle entry there was.

So a scan that came back with fewer entries than it asked for (it saw every entry idle at
that moment) is remembered for ``interval_ms`` per (stream, group, visibility_ms), and
consumes with the same key skip the scan until then. Redelivery therefore happens after
``visibility_ms`` and at most ``interval_ms`` later, on the node that serves the topic.
A scan that filled its ``count`` proves nothing about the entries after them and is not
remembered. ``forget`` (after a nack, whose entries are claimable at once) drops what is
known of a group. ``interval_ms == 0`` scans on every consume.

Pure: times come in as arguments (milliseconds of a monotonic clock). The memory is
bounded: past ``max_keys`` entries, expired ones are dropped, and if that is not enough,
all of them (forgetting only costs a scan).
"""

from __future__ import annotations

ScanKey = tuple[str, str, int]


class IdleScans:
    """Per (stream, group, visibility_ms): until when a scan may be skipped."""

    def __init__(self, interval_ms: int, max_keys: int = 10_000) -> None:
        if interval_ms < 0 or max_keys < 1:
            raise ValueError("interval_ms must be >= 0 and max_keys >= 1")
        self.interval_ms = interval_ms
        self.max_keys = max_keys
        self._skip_until: dict[ScanKey, int] = {}

    def __len__(self) -> int:
        return len(self._skip_until)

    def due(self, key: ScanKey, now_ms: int) -> bool:
        """Whether a consume with this key must scan for idle entries now."""
        until = self._skip_until.get(key)
        return until is None or now_ms >= until

    def scanned(self, key: ScanKey, now_ms: int, *, asked: int, found: int) -> None:
        """Record a scan that asked for ``asked`` entries and found ``found``."""
        if found >= asked or self.interval_ms == 0:
            self._skip_until.pop(key, None)
            return
        if key not in self._skip_until and len(self._skip_until) >= self.max_keys:
            self._prune(now_ms)
        self._skip_until[key] = now_ms + self.interval_ms

    def forget(self, stream: str, group: str) -> None:
        """Scan again on the next consume of this group, whatever its visibility."""
        for key in [k for k in self._skip_until if k[0] == stream and k[1] == group]:
            del self._skip_until[key]

    def _prune(self, now_ms: int) -> None:
        for key in [k for k, until in self._skip_until.items() if now_ms >= until]:
            del self._skip_until[key]
        if len(self._skip_until) >= self.max_keys:
            self._skip_until.clear()
