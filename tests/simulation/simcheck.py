"""History checkers for the simulator (after TigerBeetle's `state_checker.zig`).

The cluster reports every observable event here as it happens: a node's role and term,
each hard state and log write as it reaches stable storage, commit advances, applied
entries, votes on the wire and the outcomes of the lock table. The checkers keep the
whole history of a run, so "at most one leader per term" means over all time, not at
one instant, and a violation raises `SimInvariantError` the moment it becomes visible.

The checkers depend only on what Raft and the lock table promise, never on how the
cores keep their state, so a forged history (see the tests) must make them fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from distcluster_worker.raft.messages import Entry, HardState, VoteResponse


class SimInvariantError(Exception):
    """A property the cores promise did not hold; `invariant` names it in one phrase."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


def violation(invariant: str, detail: str) -> SimInvariantError:
    return SimInvariantError(invariant, detail)


class LogView(Protocol):
    """The read-only slice of a Raft node a checker needs."""

    @property
    def first_index(self) -> int: ...

    def term_at(self, index: int) -> int | None: ...


# -- Raft -----------------------------------------------------------------------------


@dataclass
class _Committed:
    """A committed index: the entry's term, and the term of whoever first reported it.

    Leader completeness binds only leaders of terms above the one the entry was committed
    in. The reporter's term is at least that term, so checking only leaders above it never
    raises a false alarm: a delayed vote may still crown a leader of an older term after
    the commit, and that leader may rightly lack the entry.
    """

    term: int
    seen_in_term: int


@dataclass
class RaftChecker:
    """Election safety, log matching, leader completeness, state-machine safety, durability,
    and one membership change at a time."""

    leaders: dict[int, str] = field(default_factory=dict)
    # (index, term) -> (term at index - 1, kind, data): by induction this is log matching.
    entries: dict[tuple[int, int], tuple[int, str, str]] = field(default_factory=dict)
    committed: dict[int, _Committed] = field(default_factory=dict)
    applied: dict[int, tuple[int, str, str]] = field(default_factory=dict)
    votes: dict[tuple[str, int], str] = field(default_factory=dict)
    stored_term: dict[str, int] = field(default_factory=dict)
    stored_commit: dict[str, int] = field(default_factory=dict)
    live_term: dict[str, int] = field(default_factory=dict)
    live_commit: dict[str, int] = field(default_factory=dict)
    leader_seen: set[tuple[str, int]] = field(default_factory=set)
    max_commit: int = 0

    # -- roles ---------------------------------------------------------------------

    def on_role(self, node_id: str, state: str, term: int, log: LogView) -> None:
        self._check_live_term(node_id, term)
        if state != "leader":
            return
        holder = self.leaders.setdefault(term, node_id)
        if holder != node_id:
            raise violation("election safety", f"term {term} has leaders {holder} and {node_id}")
        if (node_id, term) not in self.leader_seen:
            self.leader_seen.add((node_id, term))
            self._check_leader_complete(node_id, term, log, self.committed.items())

    def _check_live_term(self, node_id: str, term: int) -> None:
        last = self.live_term.get(node_id, 0)
        if term < last:
            raise violation("term monotonic", f"{node_id} term went {last} -> {term}")
        self.live_term[node_id] = term

    def _check_leader_complete(
        self,
        node_id: str,
        term: int,
        log: LogView,
        committed: Iterable[tuple[int, _Committed]],
    ) -> None:
        for index, info in committed:
            if info.seen_in_term >= term or index < log.first_index:
                continue
            have = log.term_at(index)
            if have != info.term:
                raise violation(
                    "leader completeness",
                    f"leader {node_id} of term {term} has term {have} at committed index "
                    f"{index} (committed term {info.term})",
                )

    # -- stable storage --------------------------------------------------------------

    def on_hard_state(self, node_id: str, hs: HardState) -> None:
        last_term = self.stored_term.get(node_id, 0)
        last_commit = self.stored_commit.get(node_id, 0)
        if hs.term < last_term:
            raise violation("term monotonic", f"{node_id} stored term {last_term} -> {hs.term}")
        if hs.commit < last_commit:
            raise violation(
                "commit monotonic", f"{node_id} stored commit {last_commit} -> {hs.commit}"
            )
        self.stored_term[node_id] = hs.term
        self.stored_commit[node_id] = hs.commit
        if hs.voted_for is not None:
            self._record_vote(node_id, hs.term, hs.voted_for)

    def _record_vote(self, node_id: str, term: int, candidate: str) -> None:
        earlier = self.votes.setdefault((node_id, term), candidate)
        if earlier != candidate:
            raise violation(
                "one vote per term", f"{node_id} voted {earlier} then {candidate} in term {term}"
            )

    def on_log_write(self, node_id: str, entries: Sequence[Entry], prev_term: int | None) -> None:
        """`prev_term` is the writer's term at `entries[0].index - 1` (None: unknown)."""
        for entry in entries:
            if prev_term is not None:
                self._record_entry(node_id, entry, prev_term)
            prev_term = entry.term

    def _record_entry(self, node_id: str, entry: Entry, prev_term: int) -> None:
        if entry.term < prev_term:
            raise violation(
                "log terms non-decreasing",
                f"{node_id} index {entry.index} term {entry.term} after term {prev_term}",
            )
        key = (entry.index, entry.term)
        value = (prev_term, entry.kind, entry.data)
        known = self.entries.setdefault(key, value)
        if known != value:
            raise violation(
                "log matching",
                f"{node_id} has (index {entry.index}, term {entry.term}) = {value[:2]} "
                f"{value[2][:60]!r} but another log had {known[:2]} {known[2][:60]!r}",
            )

    def on_truncate(self, node_id: str, index: int, old_term: int, new_term: int | None) -> None:
        """A stored entry is cut (`new_term` None) or replaced: never a committed one.

        Any log may hold a stale entry where the cluster committed another one (a cut-off
        leader appends its own proposals); what Raft forbids is dropping the committed one.
        """
        committed = self.committed.get(index)
        if committed is not None and committed.term == old_term and new_term != old_term:
            raise violation(
                "committed entry overwritten",
                f"{node_id} replaced committed (index {index}, term {old_term}) "
                f"with term {new_term}",
            )

    def on_config_write(self, node_id: str, entry: Entry, previous: Entry) -> None:
        """A config entry may follow only a committed one: at most one change in flight.

        A leader appends a config entry only once its log's previous one is committed
        (thesis 4.1), and by log matching every log that holds the new entry holds that
        same previous one, so the rule holds for every write, on every node.
        """
        committed = self.committed.get(previous.index)
        if previous.index > self.max_commit or (
            committed is not None and committed.term != previous.term
        ):
            raise violation(
                "one uncommitted config change",
                f"{node_id} wrote config entry (index {entry.index}, term {entry.term}) after "
                f"uncommitted config entry (index {previous.index}, term {previous.term}); "
                f"cluster commit {self.max_commit}",
            )

    def on_vote_sent(self, msg: VoteResponse, stored: HardState) -> None:
        """A granted real vote must already be on stable storage when it leaves."""
        if msg.pre_vote or not msg.granted:
            return
        if stored.term != msg.term or stored.voted_for != msg.dst:
            raise violation(
                "vote durable before sent",
                f"{msg.src} granted {msg.dst} term {msg.term} but stored {stored}",
            )
        self._record_vote(msg.src, msg.term, msg.dst)

    # -- commit and apply --------------------------------------------------------------

    def on_commit(
        self,
        node_id: str,
        commit: int,
        term: int,
        log: LogView,
        leaders: Callable[[], Iterable[tuple[str, int, LogView]]],
    ) -> None:
        last = self.live_commit.get(node_id, 0)
        if commit < last:
            raise violation("commit monotonic", f"{node_id} commit went {last} -> {commit}")
        self.live_commit[node_id] = commit
        fresh: list[tuple[int, _Committed]] = []
        for index in range(max(last + 1, log.first_index), commit + 1):
            have = log.term_at(index)
            if have is None:
                continue
            known = self.committed.get(index)
            if known is None:
                known = self.committed[index] = _Committed(have, term)
                fresh.append((index, known))
            elif known.term != have:
                raise violation(
                    "committed entry changed",
                    f"{node_id} committed term {have} at {index}, earlier term {known.term}",
                )
        self.max_commit = max(self.max_commit, commit)
        if fresh:
            for leader_id, leader_term, leader_log in leaders():
                self._check_leader_complete(leader_id, leader_term, leader_log, fresh)

    def forget_live(self, node_id: str) -> None:
        """A crash: in-memory term and commit restart from stable storage."""
        self.live_term.pop(node_id, None)
        self.live_commit.pop(node_id, None)

    def on_restart(self, node_id: str, term: int, commit: int) -> None:
        stored = self.stored_term.get(node_id, 0)
        if term < stored:
            raise violation("term survives restart", f"{node_id} stored {stored}, restarted {term}")

    def on_apply(self, node_id: str, entry: Entry) -> None:
        value = (entry.term, entry.kind, entry.data)
        known = self.applied.setdefault(entry.index, value)
        if known != value:
            raise violation(
                "state machine safety",
                f"{node_id} applied {value[:2]} {value[2][:60]!r} at {entry.index}, "
                f"another node applied {known[:2]} {known[2][:60]!r}",
            )
        committed = self.committed.get(entry.index)
        if committed is not None and committed.term != entry.term:
            raise violation(
                "applied entry not the committed one",
                f"{node_id} applied term {entry.term} at {entry.index}, committed {committed.term}",
            )


# -- Locks ----------------------------------------------------------------------------


@dataclass
class _Hold:
    mode: str
    token: int
    expires_at_ms: int


def outcome_kind(outcome: Any) -> str:
    return type(outcome).__name__.lower()


@dataclass
class HolderModel:
    """Who holds what, rebuilt only from the outcomes the table reports.

    It is independent of the table's own bookkeeping, so a table that grants an
    exclusive lock beside another holder, reuses a token, or keeps a lease past its
    expiry is caught even when its internal invariants look fine. The table holds at
    most one lease per (resource, owner); a re-acquire by a holder echoes its lease.
    """

    holds: dict[str, dict[str, _Hold]] = field(default_factory=dict)
    last_token: dict[str, int] = field(default_factory=dict)
    clock_ms: int = 0
    grants: int = 0

    def on_outcomes(self, index: int, command: dict[str, Any], outcomes: Sequence[Any]) -> None:
        now_ms = command.get("now_ms")
        if isinstance(now_ms, int):
            self.clock_ms = max(self.clock_ms, now_ms)
        for outcome in outcomes:
            kind = outcome_kind(outcome)
            if kind == "granted":
                self._grant(index, outcome)
            elif kind in ("released", "expired"):
                self._drop(index, kind, outcome)
            elif kind == "renewed":
                self._renew(outcome)
        self._check_no_expired_lease(index)

    def _grant(self, index: int, g: Any) -> None:
        holds = self.holds.setdefault(g.resource, {})
        mine = holds.get(g.owner)
        if mine is not None and mine.token == g.token and g.token != index:
            return  # a re-acquire by the holder: the table echoes the lease it has
        self.grants += 1
        if g.token != index:
            detail = f"{g.resource} token {g.token} at {index}"
            raise violation("token is the granting index", detail)
        last = self.last_token.get(g.resource, 0)
        if g.token < last or (g.token == last and last != index):
            raise violation("fencing tokens increase", f"{g.resource} token {g.token} after {last}")
        self.last_token[g.resource] = g.token
        others = [(o, h) for o, h in holds.items() if o != g.owner]
        if others and (g.mode == "exclusive" or any(h.mode == "exclusive" for _, h in others)):
            held = ", ".join(f"{o}:{h.mode}" for o, h in others)
            raise violation(
                "lock exclusion",
                f"index {index} granted {g.owner}:{g.mode} on {g.resource} held by {held}",
            )
        holds[g.owner] = _Hold(g.mode, g.token, g.expires_at_ms)

    def _drop(self, index: int, kind: str, outcome: Any) -> None:
        holds = self.holds.get(outcome.resource, {})
        hold = holds.get(outcome.owner)
        if hold is None or hold.token != outcome.token:
            raise violation(
                f"{kind} a lock not held",
                f"index {index} {kind} {outcome.resource} {outcome.owner} token "
                f"{outcome.token}; model has {hold}",
            )
        del holds[outcome.owner]

    def _renew(self, outcome: Any) -> None:
        hold = self.holds.get(outcome.resource, {}).get(outcome.owner)
        if hold is None or hold.token != outcome.token:
            raise violation("renewed a lock not held", f"{outcome.resource} {outcome.owner}")
        hold.expires_at_ms = outcome.expires_at_ms

    def _check_no_expired_lease(self, index: int) -> None:
        for resource, holds in self.holds.items():
            for owner, hold in holds.items():
                if hold.expires_at_ms <= self.clock_ms:
                    raise violation(
                        "expired lease kept",
                        f"index {index} clock {self.clock_ms}: {owner} still holds {resource} "
                        f"token {hold.token} that expired at {hold.expires_at_ms}",
                    )

    def holders(self, resource: str) -> dict[str, tuple[str, int]]:
        return {o: (h.mode, h.token) for o, h in self.holds.get(resource, {}).items()}


TableFactory = Callable[[], Any]
Restore = Callable[[str], Any]
CHECKPOINT_EVERY = 16


class LockReference:
    """The committed history applied, in index order, to one reference lock table.

    Every node's table must equal this one at the node's applied index. `snapshot()` of
    a table is its canonical text, but it is not cheap, so the reference keeps the text
    only every `CHECKPOINT_EVERY` indexes and rebuilds any other index on demand by
    restoring the checkpoint below it and replaying the entries in between.
    """

    def __init__(self, new_table: TableFactory, restore: Restore) -> None:
        self.table = new_table()
        self.restore = restore
        self.applied = 0
        self.model = HolderModel()
        self.checkpoints: dict[int, str] = {0: self.table.snapshot()}
        self.texts: dict[int, str] = {}
        self.outcomes: dict[int, list[Any]] = {}
        self.commands: dict[int, dict[str, Any]] = {}

    def catch_up(self, applied: dict[int, tuple[int, str, str]]) -> None:
        """Apply every contiguous entry the cluster has applied."""
        while self.applied + 1 in applied:
            index = self.applied + 1
            _, kind, data = applied[index]
            if kind == "command":
                self._apply(index, json.loads(data))
            self.applied = index
            if index % CHECKPOINT_EVERY == 0:
                self.checkpoints[index] = self.table.snapshot()

    def _apply(self, index: int, command: dict[str, Any]) -> None:
        outcomes = list(self.table.apply(index, command))
        self.table.check_invariants()
        self.model.on_outcomes(index, command, outcomes)
        self._check_model_agrees(index, command, outcomes)
        self.outcomes[index] = outcomes
        self.commands[index] = command

    def _check_model_agrees(self, index: int, command: dict[str, Any], outcomes: Any) -> None:
        touched = {getattr(o, "resource", None) for o in outcomes}
        touched.add(command.get("resource"))
        for resource in sorted(r for r in touched if isinstance(r, str)):
            view = self.table.view(resource)
            table = {h["owner"]: (h["mode"], h["token"]) for h in view["holders"]}
            if table != self.model.holders(resource):
                raise violation(
                    "outcomes explain the table",
                    f"index {index} {resource}: table holders {table}, "
                    f"outcomes say {self.model.holders(resource)}",
                )

    def text_at(self, index: int) -> str:
        """The reference table's snapshot text as of `index` (at most `applied`)."""
        if index > self.applied:
            raise violation(
                "table ahead of history", f"asked for {index}, history has {self.applied}"
            )
        text = self.texts.get(index)
        if text is None and index == self.applied:
            text = self.texts[index] = self.table.snapshot()
        if text is None:
            base = index - index % CHECKPOINT_EVERY
            table = self.restore(self.checkpoints[base])
            for i in range(base + 1, index + 1):
                if i in self.commands:
                    table.apply(i, self.commands[i])
            text = self.texts[index] = table.snapshot()
        return text

    def expect_table(self, node_id: str, applied: int, text: str) -> None:
        want = self.text_at(applied)
        if text != want:
            raise violation(
                "replica diverged",
                f"{node_id} table at {applied} differs from the reference: "
                f"{_first_difference(text, want)}",
            )


def _first_difference(a: str, b: str) -> str:
    pairs = zip(a, b, strict=False)
    at = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))
    return f"at char {at}: {a[max(0, at - 30) : at + 30]!r} vs {b[max(0, at - 30) : at + 30]!r}"
