"""One cached line: a value with its MESI state and the version the home gave it.

`size_bytes` is the UTF-8 length of the value, which is what the byte budget counts (key
and bookkeeping overhead are not counted; the budget is about values, which dominate).
Lines are immutable, so a state change is a new line and no caller can alter a stored
line behind the store's back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from distcluster_worker.coherence.states import MesiState


@dataclass(frozen=True, slots=True)
class Line:
    value: str
    state: MesiState
    version: int
    size_bytes: int

    @classmethod
    def of(cls, value: str, state: MesiState, version: int) -> Line:
        return cls(value, state, version, len(value.encode("utf-8")))

    def with_state(self, state: MesiState) -> Line:
        return replace(self, state=state)

    @property
    def dirty(self) -> bool:
        """Whether evicting the line needs a write-back first (it is in M)."""
        return self.state is MesiState.M
