"""kopf handlers for DistCluster: parse, build, adopt, apply, report, and nothing else.

Every path runs the same `reconcile`: create, update (`kubectl scale` too, since the scale
subresource writes `spec.replicas`), resume when the operator starts, and a timer that
re-asserts the desired state every `DEFAULT_INTERVAL_S` (a child deleted or edited by hand
comes back) and refreshes the status from the StatefulSet, the ready pods and, for
lock_manager, a node's `/raft/status` and `/raft/members`. One path, so the timer never
builds anything the handlers would not.

A lock_manager's size is not simply `spec.replicas`: its pods must join the Raft
configuration after they start and leave it before they go. Each pass asks the pure planner
(`membership_plan.plan`) for one step from what it observes (the StatefulSet, the started
pods, the configuration from `GET /raft/members`), builds the StatefulSet with the size the
planner holds (not `spec.replicas`: a scale-down keeps every pod until its removal is
committed) and makes at most one membership call (`POST` or `DELETE /raft/members`): the
worker changes its configuration one server at a time. Nothing is remembered between
passes, so a failed or interrupted step is re-planned on the next one. A failed call leaves
the StatefulSet as it is, the status Degraded (`MembershipChangeFailed`) and one Warning
Event per distinct message; a 409 (another change running) is only Progressing
(`MembershipChangeInProgress`). Queue and cache need none of this: their rings follow the
nodes' heartbeats.

A resize, of any role, changes the StatefulSet's `spec.replicas` and nothing else: the pod
template does not depend on the size (see `builders`), and `Kube.apply` patches only the
fields that moved. The template's one size-like input, the bootstrap size, is read back
from the StatefulSet on every pass (`bootstrap_replicas`), so it stays what it was at
creation across resizes and operator restarts.

Invariants:
* Nothing is built from a spec that cannot be applied: `parse_spec` refuses it, or its role
  differs from the role the children were built with. Then the status says Degraded, one
  Warning Event says why (once per distinct message, not on every tick), and create/update
  raise `kopf.PermanentError` so kopf does not retry what cannot succeed until the spec
  changes. The built role is read back from the StatefulSet's component label, so the check
  holds for update, resume and timer alike, even where no API server ran the CRD's CEL rule.
* Every child has a controller owner reference to its DistCluster (`kopf.adopt`): deleting
  the resource garbage-collects them, so there is no delete handler. The timer makes kopf
  put its finalizer (`distcluster.io/finalizer`) on each resource, to stop the timer before
  the resource goes; nothing is reconciled once a deletion has started.
* One reconcile at a time per resource, through a lock in kopf's per-object memo: the
  handler and the timer would otherwise race to create the same child.
* kopf keeps its progress and diff base in annotations under `distcluster.io/`, and the
  handlers return None: the status schema keeps no unknown field, so whatever kopf wrote
  under `status` would be dropped.
* The outside world comes in through `Deps` (API adapter, `/raft/status` fetcher, Raft
  membership client, clock), put in kopf's memo by the caller, so tests run the real
  handlers with fakes for what kmock cannot serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import kopf

from distcluster_operator import crd
from distcluster_operator.builders import (
    COMPONENT_LABEL,
    DEFAULT_CLUSTER_DOMAIN,
    WORKER_PORT,
    bootstrap_replicas,
    desired_objects,
    object_names,
    selector_string,
    worker_selector,
)
from distcluster_operator.kube import Kube
from distcluster_operator.membership_plan import (
    CONF_CHANGE_IN_PROGRESS,
    Membership,
    Step,
    parse_membership,
    plan,
)
from distcluster_operator.spec import ClusterSpec, SpecError, parse_spec
from distcluster_operator.status import MembershipNote, compute_status, degraded_status

DEFAULT_INTERVAL_S = 15.0
RAFT_STATUS_TIMEOUT_S = 2.0
RAFT_MEMBERS_TIMEOUT_S = 2.0
# A POST returns only once the learner caught up and was promoted: long enough for the
# worker's own catch-up deadline (it answers 504 past it), short enough that a pass holding
# the reconcile lock does not hang. Connecting is given the short timeout.
MEMBERSHIP_CHANGE_TIMEOUT_S = 20.0
MEMBERSHIP_FAILED = "MembershipChangeFailed"
HANDLER_BACKOFF_S = 10.0
FINALIZER = f"{crd.GROUP}/finalizer"
_RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)

Obj = dict[str, Any]
ChildRef = tuple[str, str, str]  # (apiVersion, kind, name)
RaftStatusFetcher = Callable[[str], Awaitable[Mapping[str, Any] | None]]


async def fetch_raft_status(url: str) -> Mapping[str, Any] | None:
    """A node's `/raft/status` answer, or None when it cannot be had within a short timeout
    (the leader is then unknown; the next tick asks again)."""
    timeout = aiohttp.ClientTimeout(total=RAFT_STATUS_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                return None
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


@dataclass(frozen=True)
class MembershipAnswer:
    """The answer to a membership change: its HTTP status (0 when no node answered) and
    JSON body (`{"error": {"code", "message"}}` on failure)."""

    status: int
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        error = self.body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return f"{self.status} {error.get('code', 'error')}: {error['message']}"
        return f"{self.status} {self.body.get('reason', 'no answer')}"


class MembershipClient(Protocol):
    """The lock role's admin endpoints at `url` (`.../raft/members` of any node)."""

    async def members(self, url: str) -> Mapping[str, Any] | None: ...

    async def add(self, url: str, node_id: str) -> MembershipAnswer: ...

    async def remove(self, url: str, node_id: str) -> MembershipAnswer: ...


class HttpMembership:
    """`MembershipClient` over HTTP; a node that cannot be reached is status 0."""

    async def members(self, url: str) -> Mapping[str, Any] | None:
        answer = await self._call("GET", url, None, RAFT_MEMBERS_TIMEOUT_S)
        return answer.body if answer.status == 200 else None

    async def add(self, url: str, node_id: str) -> MembershipAnswer:
        return await self._call("POST", url, {"id": node_id}, MEMBERSHIP_CHANGE_TIMEOUT_S)

    async def remove(self, url: str, node_id: str) -> MembershipAnswer:
        target = f"{url}/{quote(node_id, safe='')}"
        return await self._call("DELETE", target, None, MEMBERSHIP_CHANGE_TIMEOUT_S)

    @staticmethod
    async def _call(
        method: str, url: str, payload: Mapping[str, Any] | None, timeout_s: float
    ) -> MembershipAnswer:
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=RAFT_MEMBERS_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, url, json=payload) as response,
            ):
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                return MembershipAnswer(response.status, body if isinstance(body, dict) else {})
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"{type(exc).__name__} {exc}".strip()
            return MembershipAnswer(0, {"reason": f"unreachable ({reason})"})


def utc_now() -> datetime:
    """The wall clock, read only through `Deps.clock` (condition transition times)."""
    return datetime.now(UTC)


@dataclass
class Deps:
    """What the handlers take from the world; `memo.deps` of the operator."""

    kube: Kube
    fetch_raft_status: RaftStatusFetcher = field(default=fetch_raft_status)
    membership: MembershipClient = field(default_factory=HttpMembership)
    clock: Callable[[], datetime] = field(default=utc_now)
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


class InvalidSpecError(Exception):
    """The spec cannot be applied; `reason` is the CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# Pure helpers: no I/O, no clock.


def raft_status_url(name: str, namespace: str) -> str:
    """The client Service's `/raft/status`: any ready node knows the current leader. The
    short `<svc>.<ns>.svc` name resolves through the pod's DNS search path whatever the
    cluster domain is."""
    service = object_names(name).client_service
    return f"http://{service}.{namespace}.svc:{WORKER_PORT}/raft/status"


def raft_members_url(name: str, namespace: str) -> str:
    """The client Service's `/raft/members`: followers forward changes to the leader."""
    service = object_names(name).client_service
    return f"http://{service}.{namespace}.svc:{WORKER_PORT}/raft/members"


def statefulset_replicas(statefulset: Mapping[str, Any] | None) -> int | None:
    """The StatefulSet's `spec.replicas` (None when there is no StatefulSet yet)."""
    if statefulset is None:
        return None
    return int(statefulset.get("spec", {}).get("replicas") or 0)


def step_note(step: Step | None, answer: MembershipAnswer | None) -> MembershipNote | None:
    """What the status says about this pass's membership step: nothing when the size is
    settled or only the StatefulSet moves, a failure for a failed call, else progress."""
    if step is None or step.kind in ("done", "patch_replicas"):
        return None
    if answer is None or answer.ok:
        return MembershipNote(step.reason, step.message)
    if answer.status == 409:
        return MembershipNote(
            CONF_CHANGE_IN_PROGRESS,
            f"{step.message} Another change is running ({answer.message}); retrying.",
        )
    verb = "Adding" if step.kind == "add_member" else "Removing"
    return MembershipNote(
        MEMBERSHIP_FAILED,
        f"{verb} {step.member} failed ({answer.message}); the StatefulSet stays at "
        f"{step.replicas} replicas and the change is retried.",
        failed=True,
    )


def status_members(
    spec: ClusterSpec,
    ready: Sequence[str],
    membership: Membership | None,
    previous: Mapping[str, Any],
) -> list[str]:
    """The status' members: the committed voters for lock_manager (the last reported ones
    while the configuration cannot be read), the ready workers otherwise."""
    if spec.role != "lock_manager":
        return list(ready)
    if membership is None:
        return [str(member) for member in previous.get("members") or []]
    return sorted(membership.committed_voters)


def built_role(statefulset: Mapping[str, Any] | None) -> str | None:
    """The role the existing workers were built with, or None when there are none yet."""
    if statefulset is None:
        return None
    role = statefulset.get("metadata", {}).get("labels", {}).get(COMPONENT_LABEL)
    return role if isinstance(role, str) else None


def validate(
    spec: Mapping[str, Any], name: str, statefulset: Mapping[str, Any] | None
) -> ClusterSpec:
    """The parsed spec; raises InvalidSpecError when it is refused or would change the role."""
    try:
        parsed = parse_spec(spec, name=name)
    except SpecError as exc:
        raise InvalidSpecError("InvalidSpec", exc.message) from None
    role = built_role(statefulset)
    if role is not None and role != parsed.role:
        raise InvalidSpecError(
            "RoleImmutable",
            f"spec.role cannot change from {role} to {parsed.role}: the workers and their "
            "Redis data belong to the first; create a new DistCluster instead.",
        )
    return parsed


def all_children(name: str) -> list[ChildRef]:
    """Every object a DistCluster may own, wanted now or not."""
    names = object_names(name)
    return [
        ("v1", "ConfigMap", names.config_map),
        ("v1", "PersistentVolumeClaim", names.redis_pvc),
        ("v1", "Service", names.redis_service),
        ("apps/v1", "Deployment", names.redis_deployment),
        ("v1", "Service", names.peers_service),
        ("v1", "Service", names.client_service),
        ("apps/v1", "StatefulSet", names.statefulset),
        ("policy/v1", "PodDisruptionBudget", names.pdb),
    ]


def stale_children(name: str, desired: Sequence[Mapping[str, Any]]) -> list[ChildRef]:
    """Children no longer wanted (a managed Redis after a switch to an external one, its
    volume after persistence is turned off): pruned when they are the resource's own."""
    wanted = {(obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) for obj in desired}
    return [child for child in all_children(name) if child not in wanted]


def _worker_pods(pods: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The DistCluster's worker pods; the labels are checked here too, not only by the
    API's selector."""
    selector = worker_selector(name)
    return [
        pod
        for pod in pods
        if all(
            (pod.get("metadata", {}).get("labels") or {}).get(key) == value
            for key, value in selector.items()
        )
    ]


def _is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _has_started(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status", {})
    containers = status.get("containerStatuses") or []
    return (
        status.get("phase") == "Running"
        and bool(containers)
        and all(c.get("started") is True for c in containers)
    )


def ready_members(pods: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    """Names (= node ids) of the DistCluster's worker pods whose Ready condition is True."""
    return sorted(
        str(pod["metadata"]["name"]) for pod in _worker_pods(pods, name) if _is_ready(pod)
    )


def started_members(pods: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    """Names of the worker pods that can be added to the Raft configuration: Ready, or
    running with every container started. A lock node waiting to join is never Ready (its
    readiness needs a leader, which it hears from only once it is a member), so waiting
    for Ready alone would wait for ever."""
    return sorted(
        str(pod["metadata"]["name"])
        for pod in _worker_pods(pods, name)
        if _is_ready(pod) or _has_started(pod)
    )


def status_changed(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether merging `new` into `current` would change anything (None removes a field)."""
    for key, value in new.items():
        if value is None:
            if current.get(key) is not None:
                return True
        elif current.get(key) != value:
            return True
    return False


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_changes(changes: Sequence[tuple[str, str, str]]) -> str:
    """One sentence for an Event: `created StatefulSet demo; patched Service demo.`"""
    return "; ".join(f"{action} {kind} {name}" for action, kind, name in changes) + "."


# The shell: kopf handlers and the I/O they drive.


def _deps(memo: kopf.Memo) -> Deps:
    deps = memo.get("deps")
    if not isinstance(deps, Deps):
        raise RuntimeError("the operator's memo has no Deps: start it through cli.main")
    return deps


def _generation(body: kopf.Body) -> int:
    return int(body.get("metadata", {}).get("generation") or 0)


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf's own state in annotations (see the module doc); Events from the handlers only,
    not from every log line."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=crd.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=crd.GROUP)
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = True
    settings.posting.loggers = False
    settings.posting.level = logging.INFO


async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """create, update and resume: a refused spec fails permanently (until it changes)."""
    await _reconcile_locked(body, memo, logger, permanent=True)


async def reassert(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """The timer: the same reconcile; a refused spec only keeps the status up to date."""
    await _reconcile_locked(body, memo, logger, permanent=False)


async def _reconcile_locked(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, *, permanent: bool
) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return  # The garbage collector is removing the children: do not fight it.
    lock = memo.setdefault("reconcile_lock", asyncio.Lock())
    async with lock:
        await _reconcile(body, memo, logger, permanent=permanent)


async def _reconcile(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, *, permanent: bool
) -> None:
    deps = _deps(memo)
    meta = body.get("metadata", {})
    name, namespace = str(meta["name"]), str(meta["namespace"])
    statefulset = await asyncio.to_thread(
        deps.kube.get, "apps/v1", "StatefulSet", namespace, object_names(name).statefulset
    )
    try:
        spec = validate(body.get("spec", {}), name, statefulset)
    except InvalidSpecError as invalid:
        await _report_invalid(body, memo, invalid, logger)
        if permanent:
            raise kopf.PermanentError(invalid.message) from None
        return
    memo.pop("warned", None)
    step, membership = await _plan_size(deps, name, namespace, spec, statefulset)
    replicas = spec.replicas if step is None else step.replicas
    sized = spec.model_copy(update={"replicas": replicas})
    bootstrap = bootstrap_replicas(statefulset, replicas)
    objects = desired_objects(name, namespace, sized, deps.cluster_domain, bootstrap)
    kopf.adopt(objects, owner=body)
    stale = stale_children(name, objects)
    changes = await asyncio.to_thread(
        _apply_children, deps.kube, namespace, objects, stale, str(meta["uid"])
    )
    if changes:
        logger.info("Reconciled: %s", describe_changes(changes))
        kopf.info(body, reason="Reconciled", message=describe_changes(changes))
    note = await _change_membership(body, memo, step, logger)
    await _refresh_status(body, spec, deps, membership, note)


async def _plan_size(
    deps: Deps,
    name: str,
    namespace: str,
    spec: ClusterSpec,
    statefulset: Mapping[str, Any] | None,
) -> tuple[Step | None, Membership | None]:
    """For lock_manager, the planner's step from what is observed now, with the Raft
    configuration it saw; (None, None) for the other roles, sized by the spec alone."""
    if spec.role != "lock_manager":
        return None, None
    pods = await asyncio.to_thread(deps.kube.list, "v1", "Pod", namespace, selector_string(name))
    membership = parse_membership(await deps.membership.members(raft_members_url(name, namespace)))
    current = statefulset_replicas(statefulset)
    return plan(name, spec.replicas, current, started_members(pods, name), membership), membership


async def _change_membership(
    body: kopf.Body, memo: kopf.Memo, step: Step | None, logger: kopf.Logger
) -> MembershipNote | None:
    """Make the step's membership call, if any; what the status should say about it. A
    failure is a Warning Event, once per distinct message."""
    if step is None or step.member is None:
        return step_note(step, None)
    deps = _deps(memo)
    meta = body.get("metadata", {})
    url = raft_members_url(str(meta["name"]), str(meta["namespace"]))
    if step.kind == "add_member":
        answer = await deps.membership.add(url, step.member)
    else:
        answer = await deps.membership.remove(url, step.member)
    note = step_note(step, answer)
    if note is not None and note.failed:
        if memo.get("membership_warned") != note.message:
            logger.warning("%s: %s", note.reason, note.message)
            kopf.warn(body, reason=note.reason, message=note.message)
            memo["membership_warned"] = note.message
    else:
        memo.pop("membership_warned", None)
        if answer.ok:
            done = "added to" if step.kind == "add_member" else "removed from"
            message = f"{step.member} {done} the Raft configuration."
            logger.info("%s", message)
            kopf.info(body, reason=step.reason, message=message)
    return note


def _apply_children(
    kube: Kube,
    namespace: str,
    objects: Sequence[Mapping[str, Any]],
    stale: Sequence[ChildRef],
    owner_uid: str,
) -> list[tuple[str, str, str]]:
    """Apply the desired children in order, prune the stale ones; what changed."""
    changes: list[tuple[str, str, str]] = []
    for obj in objects:
        action = kube.apply(obj)
        if action != "unchanged":
            changes.append((action, str(obj["kind"]), str(obj["metadata"]["name"])))
    for api_version, kind, child in stale:
        if kube.delete_owned(api_version, kind, namespace, child, owner_uid):
            changes.append(("deleted", kind, child))
    return changes


async def _report_invalid(
    body: kopf.Body, memo: kopf.Memo, invalid: InvalidSpecError, logger: kopf.Logger
) -> None:
    """Degraded status, and a Warning Event unless this very message was already posted."""
    deps = _deps(memo)
    meta = body.get("metadata", {})
    current = body.get("status") or {}
    status = degraded_status(
        invalid.message,
        _generation(body),
        current.get("conditions") or [],
        iso(deps.clock()),
        reason=invalid.reason,
    )
    if memo.get("warned") != invalid.message:
        logger.warning("Not reconciled (%s): %s", invalid.reason, invalid.message)
        kopf.warn(body, reason=invalid.reason, message=invalid.message)
        memo["warned"] = invalid.message
    if status_changed(current, status):
        await asyncio.to_thread(
            deps.kube.patch_cr_status, str(meta["namespace"]), str(meta["name"]), status
        )


async def _refresh_status(
    body: kopf.Body,
    spec: ClusterSpec,
    deps: Deps,
    membership: Membership | None = None,
    note: MembershipNote | None = None,
) -> None:
    """Observe the StatefulSet, the ready pods and the leader; patch the status if it moved."""
    meta = body.get("metadata", {})
    name, namespace = str(meta["name"]), str(meta["namespace"])
    sts_status, ready = await asyncio.to_thread(_observe, deps.kube, name, namespace)
    current = body.get("status") or {}
    members = status_members(spec, ready, membership, current)
    leader = None
    if spec.role == "lock_manager" and members:
        answer = await deps.fetch_raft_status(raft_status_url(name, namespace))
        reported = (answer or {}).get("leader_id")
        leader = reported if reported in members else None
    status = compute_status(
        spec,
        _generation(body),
        sts_status,
        leader,
        members,
        current.get("conditions") or [],
        iso(deps.clock()),
        name=name,
        membership=note,
    )
    if status_changed(current, status):
        await asyncio.to_thread(deps.kube.patch_cr_status, namespace, name, status)


def _observe(kube: Kube, name: str, namespace: str) -> tuple[Mapping[str, Any] | None, list[str]]:
    statefulset = kube.get("apps/v1", "StatefulSet", namespace, object_names(name).statefulset)
    pods = kube.list("v1", "Pod", namespace, selector_string(name))
    sts_status = statefulset.get("status") if statefulset is not None else None
    return sts_status, ready_members(pods, name)


def build_registry(*, interval_s: float = DEFAULT_INTERVAL_S) -> kopf.OperatorRegistry:
    """A registry holding the DistCluster handlers, the timer every `interval_s` seconds.

    A function rather than module-level decorators, so that tests build an operator with a
    short interval and importing this module registers nothing anywhere."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(configure)
    for on_cause in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on_cause(*_RESOURCE, registry=registry, backoff=HANDLER_BACKOFF_S)(reconcile)
    kopf.timer(
        *_RESOURCE,
        registry=registry,
        interval=interval_s,
        initial_delay=interval_s,
        backoff=interval_s,
    )(reassert)
    return registry
