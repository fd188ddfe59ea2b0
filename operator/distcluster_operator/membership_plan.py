"""Pure planner for a lock_manager's size: the next step that moves the StatefulSet and the
Raft configuration towards `spec.replicas` without ever shrinking the quorum.

The handlers observe (the StatefulSet's `spec.replicas`, the started pods, a node's
`GET /raft/members`), call `plan`, carry out the one step it returns and observe again on
the next pass; nothing is remembered between passes, so a pass that failed or raced with
another writer is simply re-planned. The worker changes its configuration one server at a
time, hence one membership call per pass.

Order of the steps, the first that applies:
1. The StatefulSet grows (`patch_replicas`) to `spec.replicas`, and never stays below a
   node of the configuration (a member whose pod is gone, e.g. after a hand-made
   `kubectl scale statefulset`, gets it back). Adding pods never endangers a quorum: a new
   pod with empty storage joins as a learner and never campaigns.
2. Without the membership (no leader, node unreachable) nothing else is decided (`wait`).
3. While the configuration has an uncommitted change, the worker refuses another (`wait`).
4. Scale down, highest ordinal first: a node that will go and is still in the configuration
   is removed (`remove_member`), one at a time.
5. Only when the committed configuration holds no node that will go does the StatefulSet
   shrink (`patch_replicas`): its pods go after their membership did.
6. Scale up, lowest ordinal first: a wanted pod that is not a voter is added
   (`add_member`) once its pod has started (Ready, or running with its container started:
   a node waiting to join knows no leader, so it is not Ready before it is added); the
   next waits for it (`wait`).
7. Otherwise `done`.

Invariant (checked on every plan, raising `PlanError`): the StatefulSet size a plan asks
for is at least one past the highest ordinal of any node in the latest or the committed
configuration, so no pod of a voter is removed while it still votes.

Node ids are pod names `<name>-<ordinal>`; an id of another shape in the configuration is
none of the operator's business and is left alone (it neither blocks nor is removed).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

StepKind = Literal["patch_replicas", "add_member", "remove_member", "wait", "done"]

# Wait reasons, CamelCase as the status conditions use them.
CONF_CHANGE_IN_PROGRESS = "MembershipChangeInProgress"
MEMBERSHIP_UNKNOWN = "MembershipUnknown"
WAITING_FOR_POD = "WaitingForPod"


class PlanError(Exception):
    """An invariant of the plan does not hold: a bug, never a state of the world."""


@dataclass(frozen=True)
class Membership:
    """A Raft configuration as `GET /raft/members` reports it: the latest one (which may be
    uncommitted) and the committed one."""

    voters: frozenset[str]
    learners: frozenset[str]
    committed_voters: frozenset[str]
    committed_learners: frozenset[str]

    @classmethod
    def of(
        cls,
        voters: Collection[str],
        learners: Collection[str] = (),
        committed_voters: Collection[str] | None = None,
        committed_learners: Collection[str] | None = None,
    ) -> Membership:
        """A configuration; the committed one is the latest unless given."""
        return cls(
            frozenset(voters),
            frozenset(learners),
            frozenset(voters if committed_voters is None else committed_voters),
            frozenset(learners if committed_learners is None else committed_learners),
        )

    @property
    def latest(self) -> frozenset[str]:
        return self.voters | self.learners

    @property
    def committed(self) -> frozenset[str]:
        return self.committed_voters | self.committed_learners

    @property
    def settled(self) -> bool:
        """Whether the latest configuration is committed (no change under way)."""
        return self.voters == self.committed_voters and self.learners == self.committed_learners


@dataclass(frozen=True)
class Step:
    """What to do now. `replicas` is the StatefulSet size to apply in this pass (the new
    size for `patch_replicas`, the current one otherwise); `member` the node id to add or
    remove; `reason` (CamelCase) and `message` say why, for the status."""

    kind: StepKind
    replicas: int
    member: str | None = None
    reason: str = ""
    message: str = ""

    @classmethod
    def patch_replicas(cls, replicas: int, message: str) -> Step:
        return cls("patch_replicas", replicas, reason="Scaling", message=message)

    @classmethod
    def add_member(cls, replicas: int, member: str) -> Step:
        message = f"Adding {member} to the Raft configuration."
        return cls("add_member", replicas, member, "AddingMember", message)

    @classmethod
    def remove_member(cls, replicas: int, member: str) -> Step:
        message = f"Removing {member} from the Raft configuration before its pod goes."
        return cls("remove_member", replicas, member, "RemovingMember", message)

    @classmethod
    def wait(cls, replicas: int, reason: str, message: str) -> Step:
        return cls("wait", replicas, reason=reason, message=message)

    @classmethod
    def done(cls, replicas: int) -> Step:
        return cls("done", replicas, reason="MembershipSettled", message="")


def parse_membership(answer: Mapping[str, Any] | None) -> Membership | None:
    """The configuration from a `GET /raft/members` answer, or None when the answer is
    missing or not of the documented shape (then nothing is decided from it)."""
    if answer is None:
        return None
    committed = answer.get("committed")
    if not isinstance(committed, Mapping):
        return None
    lists = [
        answer.get("voters"),
        answer.get("learners", []),
        committed.get("voters"),
        committed.get("learners", []),
    ]
    if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in lists):
        return None
    voters, learners, committed_voters, committed_learners = lists
    return Membership.of(voters, learners, committed_voters, committed_learners)


def ordinal(name: str, node_id: str) -> int | None:
    """The ordinal of `<name>-<ordinal>`, or None for an id of another shape."""
    prefix = f"{name}-"
    suffix = node_id[len(prefix) :]
    if not node_id.startswith(prefix) or not suffix.isdigit():
        return None
    return int(suffix)


def pod_name(name: str, ordinal_: int) -> str:
    return f"{name}-{ordinal_}"


def replicas_floor(name: str, membership: Membership | None) -> int:
    """The fewest pods that keep every node of the latest and the committed configuration
    (0 when the configuration is unknown)."""
    if membership is None:
        return 0
    ordinals = [ordinal(name, i) for i in membership.latest | membership.committed]
    return max((o + 1 for o in ordinals if o is not None), default=0)


def plan(
    name: str,
    desired: int,
    current: int | None,
    started: Collection[str],
    membership: Membership | None,
) -> Step:
    """The next step for the lock_manager DistCluster `name` (see the module doc).

    `desired` is `spec.replicas`; `current` the StatefulSet's `spec.replicas` (None while it
    does not exist); `started` the names of the worker pods that have started; `membership` the
    configuration a node reported (None when it could not be had)."""
    step = _plan(name, desired, current, frozenset(started), membership)
    floor = replicas_floor(name, membership)
    if step.replicas < floor:
        raise PlanError(f"{step} would remove the pod of a member (floor {floor})")
    if step.kind != "patch_replicas" and current is not None and step.replicas != current:
        raise PlanError(f"{step} changes the StatefulSet from {current} without saying so")
    return step


def _plan(
    name: str,
    desired: int,
    current: int | None,
    started: frozenset[str],
    membership: Membership | None,
) -> Step:
    grown = max(desired, replicas_floor(name, membership))
    if current is None:  # Also after a hand-made delete: every member gets its pod back.
        return Step.patch_replicas(grown, f"Creating the StatefulSet with {grown} pods.")
    if current < grown:
        return Step.patch_replicas(grown, f"Growing the StatefulSet from {current} to {grown}.")
    if membership is None:
        return Step.wait(
            current, MEMBERSHIP_UNKNOWN, "The Raft configuration could not be read; retrying."
        )
    if not membership.settled:
        return Step.wait(
            current,
            CONF_CHANGE_IN_PROGRESS,
            "A Raft configuration change is not committed yet.",
        )
    leaving = _leaving(name, desired, membership.latest)
    if leaving:
        return Step.remove_member(current, leaving[0])
    if current > desired:
        return Step.patch_replicas(
            desired, f"Shrinking the StatefulSet from {current} to {desired}."
        )
    return _next_addition(name, desired, current, started, membership)


def _leaving(name: str, desired: int, members: frozenset[str]) -> list[str]:
    """Members whose pods will go, highest ordinal first."""
    going = [(o, i) for i in members if (o := ordinal(name, i)) is not None and o >= desired]
    return [node_id for _, node_id in sorted(going, reverse=True)]


def _next_addition(
    name: str, desired: int, current: int, started: frozenset[str], membership: Membership
) -> Step:
    """Add the lowest wanted pod that is not a voter, once it has started."""
    for ordinal_ in range(desired):
        node_id = pod_name(name, ordinal_)
        if node_id in membership.voters:
            continue
        if node_id not in started:
            return Step.wait(
                current,
                WAITING_FOR_POD,
                f"Waiting for {node_id} to start before adding it to the Raft configuration.",
            )
        return Step.add_member(current, node_id)
    return Step.done(current)
