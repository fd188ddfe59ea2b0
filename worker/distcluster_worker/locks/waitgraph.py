"""Cycle search in the wait-for graph, kept apart from the table so it can be tested alone.

Nodes are owners; an edge `a -> b` means "a waits for b" (b holds, or queues ahead with a
conflicting mode, on a resource a waits on). The table never stores the graph: it answers
`successors(owner)` from its queues on demand, which keeps one source of truth.

The search is breadth-first with neighbours visited in the order given (the table gives
them sorted), so every replica reports the same cycle, and that cycle is a shortest one,
which is the most useful to show a client.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

Successors = Callable[[str], Iterable[str]]


def find_cycle(
    start: str, first_hops: Sequence[str], successors: Successors
) -> tuple[str, ...] | None:
    """The shortest cycle `(start, ..., start)` if `start` gained edges to `first_hops`.

    `first_hops` are the edges the new request would add; `successors` gives the edges
    already in the graph. Returns None when no path leads back to `start`.
    """
    parent: dict[str, str] = {}
    frontier: deque[str] = deque()
    for hop in first_hops:
        if hop == start:
            return (start, start)
        if hop not in parent:
            parent[hop] = start
            frontier.append(hop)
    while frontier:
        node = frontier.popleft()
        for nxt in successors(node):
            if nxt == start:
                return _path_to(node, parent, start) + (start,)
            if nxt not in parent:
                parent[nxt] = node
                frontier.append(nxt)
    return None


def _path_to(node: str, parent: dict[str, str], start: str) -> tuple[str, ...]:
    """Walk `parent` links back from `node` to `start`; the path runs start -> node."""
    path = [node]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return tuple(reversed(path))


def find_any_cycle(nodes: Iterable[str], successors: Successors) -> tuple[str, ...] | None:
    """Some cycle of the graph, or None: used by the invariant check (the graph is a DAG)."""
    for node in sorted(nodes):
        cycle = find_cycle(node, list(successors(node)), successors)
        if cycle is not None:
            return cycle
    return None
