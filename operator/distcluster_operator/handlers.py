"""kopf handlers for DistCluster: parse, build, adopt, apply, report, and nothing else.

Every path runs the same `reconcile`: create, update (`kubectl scale` too, since the scale
subresource writes `spec.replicas`), resume when the operator starts, and a timer that
re-asserts the desired state every `DEFAULT_INTERVAL_S` (a child deleted or edited by hand
comes back) and refreshes the status from the StatefulSet, the ready pods and, for
lock_manager, a node's `/raft/status`. One path, so the timer never builds anything the
handlers would not.

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
* The outside world comes in through `Deps` (API adapter, `/raft/status` fetcher, clock), put
  in kopf's memo by the caller, so tests run the real handlers with fakes for what kmock
  cannot serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from distcluster_operator import crd
from distcluster_operator.builders import (
    COMPONENT_LABEL,
    DEFAULT_CLUSTER_DOMAIN,
    WORKER_PORT,
    desired_objects,
    object_names,
    selector_string,
    worker_selector,
)
from distcluster_operator.kube import Kube
from distcluster_operator.spec import ClusterSpec, SpecError, parse_spec
from distcluster_operator.status import compute_status, degraded_status

DEFAULT_INTERVAL_S = 15.0
RAFT_STATUS_TIMEOUT_S = 2.0
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


def utc_now() -> datetime:
    """The wall clock, read only through `Deps.clock` (condition transition times)."""
    return datetime.now(UTC)


@dataclass
class Deps:
    """What the handlers take from the world; `memo.deps` of the operator."""

    kube: Kube
    fetch_raft_status: RaftStatusFetcher = field(default=fetch_raft_status)
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


def ready_members(pods: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    """Names (= node ids) of the DistCluster's worker pods whose Ready condition is True.
    The labels are checked here too, not only by the API's selector."""
    selector = worker_selector(name)
    members = []
    for pod in pods:
        labels = pod.get("metadata", {}).get("labels") or {}
        if any(labels.get(key) != value for key, value in selector.items()):
            continue
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            members.append(str(pod["metadata"]["name"]))
    return sorted(members)


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
    objects = desired_objects(name, namespace, spec, deps.cluster_domain)
    kopf.adopt(objects, owner=body)
    stale = stale_children(name, objects)
    changes = await asyncio.to_thread(
        _apply_children, deps.kube, namespace, objects, stale, str(meta["uid"])
    )
    if changes:
        logger.info("Reconciled: %s", describe_changes(changes))
        kopf.info(body, reason="Reconciled", message=describe_changes(changes))
    await _refresh_status(body, spec, deps)


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


async def _refresh_status(body: kopf.Body, spec: ClusterSpec, deps: Deps) -> None:
    """Observe the StatefulSet, the ready pods and the leader; patch the status if it moved."""
    meta = body.get("metadata", {})
    name, namespace = str(meta["name"]), str(meta["namespace"])
    sts_status, members = await asyncio.to_thread(_observe, deps.kube, name, namespace)
    leader = None
    if spec.role == "lock_manager" and members:
        answer = await deps.fetch_raft_status(raft_status_url(name, namespace))
        reported = (answer or {}).get("leader_id")
        leader = reported if reported in members else None
    current = body.get("status") or {}
    status = compute_status(
        spec,
        _generation(body),
        sts_status,
        leader,
        members,
        current.get("conditions") or [],
        iso(deps.clock()),
        name=name,
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
