"""The pure size planner of a lock_manager: a table of observed states and the one step each
gives, whole scale-ups and scale-downs replayed against a model cluster, and a seeded sweep
over random states checking the plan's invariants (never below a member's pod)."""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field

import pytest

from distcluster_operator.membership_plan import (
    CONF_CHANGE_IN_PROGRESS,
    MEMBERSHIP_UNKNOWN,
    WAITING_FOR_POD,
    Membership,
    Step,
    ordinal,
    parse_membership,
    plan,
    replicas_floor,
)

NAME = "locks"


def ids(*ordinals: int) -> list[str]:
    return [f"{NAME}-{o}" for o in ordinals]


def m(
    voters: Collection[str], learners: Collection[str] = (), committed: list[str] | None = None
) -> Membership:
    """A configuration with these latest voters and learners; its committed voters are
    `committed` when a change is under way."""
    return Membership.of(voters, learners, committed, learners)


ALL3, ALL5 = ids(0, 1, 2), ids(0, 1, 2, 3, 4)

# (desired, current StatefulSet replicas, started pods, membership) -> (kind, replicas, member
# or the wait reason)
CASES: dict[str, tuple[int, int | None, list[str], Membership | None, tuple[str, int, str]]] = {
    "create": (3, None, [], None, ("patch_replicas", 3, "")),
    "up: grow first": (5, 3, ALL3, m(ALL3), ("patch_replicas", 5, "")),
    "up: grow without membership": (5, 3, ALL3, None, ("patch_replicas", 5, "")),
    "up: new pod not started": (5, 5, ALL3, m(ALL3), ("wait", 5, WAITING_FOR_POD)),
    "up: ordinal order": (5, 5, ids(0, 1, 2, 4), m(ALL3), ("wait", 5, WAITING_FOR_POD)),
    "up: add the first": (5, 5, ALL5, m(ALL3), ("add_member", 5, "locks-3")),
    "up: add the next": (5, 5, ALL5, m(ids(0, 1, 2, 3)), ("add_member", 5, "locks-4")),
    "up: promote a learner": (5, 5, ALL5, m(ALL3, ids(3)), ("add_member", 5, "locks-3")),
    "up: change uncommitted": (
        5,
        5,
        ALL5,
        m(ids(0, 1, 2, 3), committed=ALL3),
        ("wait", 5, CONF_CHANGE_IN_PROGRESS),
    ),
    "up: done": (5, 5, ALL5, m(ALL5), ("done", 5, "")),
    "steady: membership unknown": (3, 3, ALL3, None, ("wait", 3, MEMBERSHIP_UNKNOWN)),
    "steady: a member not ready is no concern": (3, 3, ids(0, 1), m(ALL3), ("done", 3, "")),
    "down: remove the highest": (3, 5, ALL5, m(ALL5), ("remove_member", 5, "locks-4")),
    "down: then the next": (3, 5, ALL5, m(ids(0, 1, 2, 3)), ("remove_member", 5, "locks-3")),
    "down: removal uncommitted": (
        3,
        5,
        ALL5,
        m(ids(0, 1, 2, 3), committed=ALL5),
        ("wait", 5, CONF_CHANGE_IN_PROGRESS),
    ),
    "down: shrink once committed": (3, 5, ALL5, m(ALL3), ("patch_replicas", 3, "")),
    "down: membership unknown never shrinks": (3, 5, ALL5, None, ("wait", 5, MEMBERSHIP_UNKNOWN)),
    "down: a leaving learner is removed too": (
        3,
        5,
        ALL5,
        m(ALL3, ids(3)),
        ("remove_member", 5, "locks-3"),
    ),
    "down: to one": (1, 3, ALL3, m(ALL3), ("remove_member", 3, "locks-2")),
    "down: a member whose pod is not ready": (3, 5, ALL3, m(ALL5), ("remove_member", 5, "locks-4")),
    "back up during a scale-down": (5, 5, ALL5, m(ids(0, 1, 2, 3)), ("add_member", 5, "locks-4")),
    "never below the voters: hand-shrunk": (3, 1, ids(0), m(ALL5), ("patch_replicas", 5, "")),
    "never below the voters: restore": (3, 2, ids(0, 1), m(ALL3), ("patch_replicas", 3, "")),
    "never below the voters: committed only": (
        3,
        3,
        ALL3,
        m(ALL3, committed=ids(0, 1, 2, 5)),
        ("patch_replicas", 6, ""),
    ),
    "never below the voters: StatefulSet deleted": (
        3,
        None,
        [],
        m(ALL5),
        ("patch_replicas", 5, ""),
    ),
    "hand-grown pods that are no members go": (3, 7, ALL3, m(ALL3), ("patch_replicas", 3, "")),
    "foreign ids are left alone": (3, 3, ALL3, m([*ALL3, "other-9", "locks-x"]), ("done", 3, "")),
}


@pytest.mark.parametrize(
    ("desired", "current", "ready", "membership", "expected"), CASES.values(), ids=CASES.keys()
)
def test_plan_table(
    desired: int,
    current: int | None,
    ready: list[str],
    membership: Membership | None,
    expected: tuple[str, int, str],
) -> None:
    step = plan(NAME, desired, current, ready, membership)
    kind, replicas, detail = expected
    assert (step.kind, step.replicas) == (kind, replicas)
    if kind in ("add_member", "remove_member"):
        assert step.member == detail
    elif kind == "wait":
        assert step.reason == detail
        assert step.message
    else:
        assert step.member is None


def test_waiting_for_a_pod_names_the_lowest_one_missing() -> None:
    step = plan(NAME, 5, 5, ids(0, 1, 2, 4), m(ALL3))
    assert "locks-3" in step.message


@dataclass
class ModelCluster:
    """What the planner's steps do to the world: pods come with the StatefulSet (ready at
    once) and go with it; membership calls change the configuration and commit at once."""

    replicas: int
    voters: set[str]
    log: list[tuple[str, str | int]] = field(default_factory=list)

    def run(self, desired: int, max_steps: int = 20) -> list[tuple[str, str | int]]:
        for _ in range(max_steps):
            ready = ids(*range(self.replicas))
            step = plan(NAME, desired, self.replicas, ready, Membership.of(self.voters))
            if step.kind == "done":
                return self.log
            self.apply(step)
        raise AssertionError(f"no fixed point in {max_steps} steps: {self.log}")

    def apply(self, step: Step) -> None:
        if step.kind == "patch_replicas":
            self.replicas = step.replicas
            self.log.append(("patch", step.replicas))
        elif step.kind == "add_member" and step.member is not None:
            self.voters.add(step.member)
            self.log.append(("add", step.member))
        elif step.kind == "remove_member" and step.member is not None:
            self.voters.discard(step.member)
            self.log.append(("remove", step.member))
        else:
            raise AssertionError(f"unexpected {step}")
        floor = replicas_floor(NAME, Membership.of(self.voters))
        assert self.replicas >= floor, f"pods below the voters after {step}"


def test_a_scale_up_grows_the_statefulset_then_adds_in_ordinal_order() -> None:
    cluster = ModelCluster(3, set(ALL3))
    assert cluster.run(7) == [
        ("patch", 7),
        ("add", "locks-3"),
        ("add", "locks-4"),
        ("add", "locks-5"),
        ("add", "locks-6"),
    ]


def test_a_scale_down_removes_highest_first_then_shrinks() -> None:
    cluster = ModelCluster(5, set(ALL5))
    assert cluster.run(1) == [
        ("remove", "locks-4"),
        ("remove", "locks-3"),
        ("remove", "locks-2"),
        ("remove", "locks-1"),
        ("patch", 1),
    ]
    assert cluster.voters == {"locks-0"}


def random_membership(rng: random.Random) -> Membership | None:
    if rng.random() < 0.15:
        return None
    pool = ids(*range(9))
    voters = set(rng.sample(pool, rng.randint(1, 7)))
    learners = set(rng.sample(sorted(set(pool) - voters), rng.randint(0, 2)))
    if rng.random() < 0.3:  # a change under way: one node differs in the committed config
        moved = rng.choice(pool)
        committed = voters ^ {moved}
        return Membership.of(voters, learners, committed, learners)
    return Membership.of(voters, learners)


@pytest.mark.parametrize("seed", range(5))
def test_plans_over_random_states_keep_their_invariants(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        desired = rng.choice([1, 3, 5, 7])
        current = None if rng.random() < 0.05 else rng.randint(0, 9)
        ready = [i for i in ids(*range(9)) if rng.random() < 0.7]
        membership = random_membership(rng)
        step = plan(NAME, desired, current, ready, membership)
        state = (desired, current, ready, membership, step)
        # Never below a member's pod, whatever is known.
        assert step.replicas >= replicas_floor(NAME, membership), state
        if step.kind != "patch_replicas":
            assert step.replicas == current, state
        if step.kind == "patch_replicas" and current is not None and step.replicas < current:
            # A shrink only once every leaving node left the committed configuration.
            assert membership is not None and membership.settled, state
            assert all(
                (o := ordinal(NAME, node)) is None or o < step.replicas
                for node in membership.committed
            ), state
        if step.kind in ("add_member", "remove_member"):
            assert membership is not None and membership.settled, state
        if step.kind == "add_member":
            assert step.member in ready, state
            assert (ordinal(NAME, step.member or "") or 0) < desired, state
        if step.kind == "remove_member":
            assert (ordinal(NAME, step.member or "") or 0) >= desired, state


def test_parse_membership_accepts_the_contract_and_refuses_other_shapes() -> None:
    answer = {
        "voters": ["locks-0", "locks-1", "locks-3"],
        "learners": [],
        "committed": {"voters": ["locks-0", "locks-1"], "learners": []},
        "config_index": 12,
        "leader_id": "locks-0",
    }
    parsed = parse_membership(answer)
    assert parsed == m(ids(0, 1, 3), committed=ids(0, 1))
    assert parsed is not None and not parsed.settled
    assert parse_membership(None) is None
    assert parse_membership({"voters": ["locks-0"]}) is None  # no committed config
    assert parse_membership({"voters": "locks-0", "committed": {"voters": []}}) is None
    assert parse_membership({"voters": [1], "committed": {"voters": []}}) is None


def test_ordinal_and_floor() -> None:
    assert ordinal(NAME, "locks-12") == 12
    assert ordinal(NAME, "locks-a") is None
    assert ordinal(NAME, "locksmith-1") is None
    assert ordinal(NAME, "locks-") is None
    assert replicas_floor(NAME, None) == 0
    assert replicas_floor(NAME, m(ids(0, 4), committed=ids(0, 6))) == 7
