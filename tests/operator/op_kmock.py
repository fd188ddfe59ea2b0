"""The real operator against the `kmock` Kubernetes API mock, for the handler tests.

`running_operator` starts kmock's emulator with the bundled core discovery and the
DistCluster resource registered (without both, kopf silently never watches), writes a
kubeconfig for it, points the kubernetes client's default kubeconfig location at it (the
client reads `KUBECONFIG` once, at import), and runs the operator the way `cli.main` does:
`kopf.run` with `build_registry` and a `Deps` in the memo, here with a short timer interval,
a fake `/raft/status`, a fake Raft membership client (`FakeMembership`) and a fixed clock.

kopf runs in a thread of its own, with its own event loop: kmock serves from the test's
loop, which therefore stays free (tests wait with `await asyncio.sleep`, never
`time.sleep`), and kopf's shutdown, which waits for every task of its loop, does not wait
for kmock's endless watch streams.

kmock keeps objects as plain JSON and stamps nothing on them. `ApiServerEmulator` adds what
the operator and kopf rely on, as an API server would: a uid and a creation time on create,
a fresh `resourceVersion` on every write (a delete that only marks a finalized object
included), a `generation` bumped when the spec changes, a name for `generateName` (kopf's
Events), and a 422 for a JSON patch whose `test` fails.
Without changing resourceVersions kopf cannot tell its own patch's echo from an older event
and re-runs handlers on stale bodies; with kmock's 500 for a failed `test`, kopf retries the
same stale patch for many seconds instead of waiting for the next event. What the
controllers would do, the `Harness` does by hand: the StatefulSet's status, the pods'
readiness. Nothing runs a garbage collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import jsonpatch
import kmock
import kopf
import kubernetes.config.kube_config
import pytest
import yaml

from distcluster_operator import crd
from distcluster_operator.handlers import Deps, MembershipAnswer, build_registry
from distcluster_operator.kube import Kube, resource_path

NAMESPACE = "default"
INTERVAL_S = 0.3
REQUEST_TIMEOUT_S = 2.0
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CR_RESOURCE = f"{crd.API_VERSION}/{crd.PLURAL}"
T = TypeVar("T")


class ApiServerEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator plus the metadata an API server stamps (see the module doc).

    Writes are stamped by amending the request's body before kmock applies it: a field
    added to a create or merge patch, an `add` operation appended to a JSON patch."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.stamps = itertools.count(1000)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and isinstance(request.data, dict | list):
            if request.action == kmock.action.CREATE:
                self._stamp_create(request.data)
            elif request.action == kmock.action.UPDATE:
                self._stamp_update(request)
        elif request.resource is not None and request.action == kmock.action.DELETE:
            self._stamp_delete(request)
        return await super()._handle(request)

    def _stamp_create(self, body: dict[str, Any]) -> None:
        metadata = body.setdefault("metadata", {})
        stamp = next(self.stamps)
        if "name" not in metadata and "generateName" in metadata:  # kopf's Events
            metadata["name"] = f"{metadata['generateName']}{stamp}"
        metadata.setdefault("uid", f"00000000-0000-4000-8000-{stamp:012d}")
        metadata.setdefault("creationTimestamp", "2025-01-02T03:04:05Z")
        metadata["generation"] = 1
        metadata["resourceVersion"] = str(stamp)

    def _stamp_update(self, request: Any) -> None:
        key = (request.resource, request.namespace, request.name)
        if isinstance(request.data, list) and key in self.objects:
            self._check_tests(self.objects[key].raw, request.data)
        changes = {"resourceVersion": str(next(self.stamps))}
        touches_spec = (
            "spec" in request.data
            if isinstance(request.data, dict)
            else any(op.get("path", "").startswith("/spec") for op in request.data)
        )
        if touches_spec and request.subresource != "status" and key in self.objects:
            current = self.objects[key].raw
            changes["generation"] = int(current["metadata"].get("generation") or 0) + 1
        if isinstance(request.data, dict):
            request.data.setdefault("metadata", {}).update(changes)
        else:
            for field_name, value in changes.items():
                path = f"/metadata/{field_name}"
                request.data.append({"op": "add", "path": path, "value": value})

    def _stamp_delete(self, request: Any) -> None:
        """A delete that only marks the object (it has finalizers) is a write: kmock sets
        `deletionTimestamp` and sends MODIFIED, and the API server gives that version a
        resourceVersion of its own. Without it, the event carried the version of the
        last write, often kopf's own patch, and kopf took it for that patch's echo and
        never saw the deletion (its finalizer then stayed, and the object with it)."""
        key = (request.resource, request.namespace, request.name)
        stored = self.objects[key] if key in self.objects else None
        if stored is None or stored.deleted:
            return
        metadata = stored.raw.get("metadata", {})
        if metadata.get("finalizers") and not metadata.get("deletionTimestamp"):
            stored.patch({"metadata": {"resourceVersion": str(next(self.stamps))}})

    @staticmethod
    def _check_tests(current: dict[str, Any], ops: list[dict[str, Any]]) -> None:
        """A JSON patch whose `test` fails is a 422 for the API server (kopf then retries on
        its next cycle), not the 500 kmock would answer."""
        tests = [op for op in ops if op.get("op") == "test"]
        try:
            jsonpatch.apply_patch(current, tests)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None


@dataclass
class FakeRaft:
    """A `/raft/status` fetcher answering with `leader`; records the URLs it was asked."""

    leader: str | None = None
    urls: list[str] = field(default_factory=list)

    async def __call__(self, url: str) -> Mapping[str, Any] | None:
        self.urls.append(url)
        if self.leader is None:
            return None
        return {"state": "follower", "term": 3, "leader_id": self.leader}


@dataclass
class FakeMembership:
    """The lock role's `/raft/members` as a tiny in-memory cluster, for `Deps.membership`.

    `voters` None answers the GET with nothing (no leader, node unreachable). An add makes
    the node a voter at once; a removal drops it from the latest configuration and, unless
    `commit_removals` is off, from the committed one too (`commit()` does it later). Every
    change is recorded in `calls` as (method, node id, the StatefulSet's `spec.replicas` at
    that moment), so tests see the order of membership calls and StatefulSet writes.
    `fail` answers every change with this answer instead (a scripted failure)."""

    voters: list[str] | None = None
    committed_voters: list[str] | None = None
    commit_removals: bool = True
    fail: MembershipAnswer | None = None
    calls: list[tuple[str, str, int | None]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    replicas: Callable[[], int | None] = lambda: None

    def commit(self) -> None:
        self.committed_voters = None

    async def members(self, url: str) -> Mapping[str, Any] | None:
        self.urls.append(url)
        if self.voters is None:
            return None
        committed = self.voters if self.committed_voters is None else self.committed_voters
        return {
            "voters": list(self.voters),
            "learners": [],
            "committed": {"voters": list(committed), "learners": []},
            "config_index": 7,
            "leader_id": self.voters[0] if self.voters else None,
        }

    async def add(self, url: str, node_id: str) -> MembershipAnswer:
        self.calls.append(("POST", node_id, self.replicas()))
        if self.fail is not None:
            return self.fail
        self.voters = sorted({*(self.voters or []), node_id})
        return MembershipAnswer(200, {"voters": self.voters, "learners": []})

    async def remove(self, url: str, node_id: str) -> MembershipAnswer:
        self.calls.append(("DELETE", node_id, self.replicas()))
        if self.fail is not None:
            return self.fail
        if node_id not in (self.voters or []):
            return MembershipAnswer(404, {"error": {"code": "not_member", "message": node_id}})
        before = list(self.voters or [])
        self.voters = [voter for voter in before if voter != node_id]
        if not self.commit_removals and self.committed_voters is None:
            self.committed_voters = before
        elif self.commit_removals:
            self.committed_voters = None
        return MembershipAnswer(200, {"voters": self.voters, "learners": []})


@dataclass
class Harness:
    """The mock API server, the fakes, and what a test does as a user or a controller."""

    server: Any  # kmock.KubernetesEmulator
    raft: FakeRaft
    membership: FakeMembership

    def obj(self, resource: str, name: str) -> dict[str, Any] | None:
        """An object as stored by the mock server, or None when it does not exist."""
        # `in` compares parsed resources: a string key is never found (kmock 0.8).
        key = (kmock.resource(resource), NAMESPACE, name)
        if key not in self.server.objects or self.server.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.server.objects[key].raw
        return raw

    def cr(self, name: str) -> dict[str, Any] | None:
        return self.obj(CR_RESOURCE, name)

    def status(self, name: str) -> dict[str, Any]:
        found = self.cr(name)
        return dict((found or {}).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for condition in self.status(name).get("conditions") or []:
            if condition["type"] == type_:
                return dict(condition)
        raise AssertionError(f"no {type_} condition in {self.status(name)}")

    def requests(self, method: str, resource: str | None = None) -> list[Any]:
        """Requests received so far with this HTTP method (and for this resource)."""
        return [
            request
            for request in self.server
            if request.method.value == method and (resource is None or request.resource == resource)
        ]

    def events(self) -> list[dict[str, Any]]:
        """Bodies of the Events the operator posted, in order."""
        return [dict(request.data) for request in self.requests("POST", "v1/events")]

    async def create(self, name: str, spec: dict[str, Any]) -> str:
        """Create a DistCluster as a user would; its uid, as the API server assigned it."""
        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }
        path = resource_path(crd.API_VERSION, crd.KIND, NAMESPACE)
        created = await self._send("post", path, body)
        return str(created["metadata"]["uid"])

    async def update_spec(self, name: str, changes: dict[str, Any]) -> None:
        """Merge `changes` into the spec (a null removes a field), as `kubectl patch` would."""
        path = resource_path(crd.API_VERSION, crd.KIND, NAMESPACE, name)
        await self._send("patch", path, {"spec": changes})

    async def scale(self, name: str, replicas: int) -> None:
        """`kubectl scale distcluster/<name>`: a Scale object through the scale subresource."""
        path = resource_path(crd.API_VERSION, crd.KIND, NAMESPACE, name, "scale")
        await self._send("patch", path, {"spec": {"replicas": replicas}})

    async def delete(self, api_version: str, kind: str, name: str) -> None:
        await self._send("delete", resource_path(api_version, kind, NAMESPACE, name), None)

    def fake_statefulset_status(self, name: str, **status: Any) -> None:
        """What the StatefulSet controller would report (no watch event: nobody watches)."""
        self.server.objects["apps/v1/statefulsets", NAMESPACE, name].patch({"status": status})

    def replicas(self, name: str) -> int | None:
        """The StatefulSet's `spec.replicas` as stored, or None when there is none."""
        found = self.obj("apps/v1/statefulsets", name)
        return None if found is None else int(found["spec"]["replicas"])

    def template(self, name: str) -> dict[str, Any]:
        """The StatefulSet's pod template as stored."""
        found = self.obj("apps/v1/statefulsets", name)
        if found is None:
            raise AssertionError(f"no StatefulSet {name}")
        return dict(found["spec"]["template"])

    def statefulset_patches(self, name: str) -> list[list[str]]:
        """The paths each JSON patch of the StatefulSet wrote outside its metadata, in order
        (a patch that only re-stamped metadata is an empty list)."""
        return [
            [op["path"] for op in request.data if not op["path"].startswith("/metadata/")]
            for request in self.requests("PATCH", "apps/v1/statefulsets")
            if request.name == name and isinstance(request.data, list)
        ]

    def fake_pod(
        self, name: str, ordinal: int, *, ready: bool, started: bool | None = None
    ) -> None:
        """A worker pod as the StatefulSet controller and the kubelet would leave it:
        running with its container started (unless `started` is False; by default, when it
        is ready), Ready or not."""
        pod_name = f"{name}-{ordinal}"
        statefulset = self.obj("apps/v1/statefulsets", name)
        if statefulset is None:
            raise AssertionError(f"no StatefulSet {name} to fake a pod of")
        labels = statefulset["spec"]["template"]["metadata"]["labels"]
        self.server.objects["v1/pods", NAMESPACE, pod_name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": labels},
            "status": {
                "phase": "Running" if started or ready else "Pending",
                "conditions": [{"type": "Ready", "status": str(ready)}],
                "containerStatuses": [
                    {
                        "name": "node",
                        "ready": ready,
                        "started": ready if started is None else started,
                    }
                ],
            },
        }

    async def _send(self, method: str, path: str, body: Any) -> Any:
        async with self.server.request(method, path, json=body) as response:
            if response.status >= 300:
                raise AssertionError(f"{method} {path}: {response.status} {await response.text()}")
            return await response.json()


async def eventually(check: Callable[[], T], timeout_s: float = 10.0) -> T:
    """The first truthy result of `check`, polled while the operator works; `check` may
    also fail with AssertionError meanwhile. Fails with the last reason after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: str = "never checked"
    while True:
        try:
            result = check()
        except AssertionError as exc:
            last = str(exc)
        else:
            if result:
                return result
            last = f"got {result!r}"
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {last}")
        await asyncio.sleep(0.05)


def register_resources(server: Any) -> None:
    """Core discovery plus the DistCluster resource with its status and scale subresources."""
    server.resources.load_bundled()
    server.resources[CR_RESOURCE] = kmock.ResourceInfo(
        kind=crd.KIND,
        singular=crd.SINGULAR,
        namespaced=True,
        shortnames=set(crd.SHORT_NAMES),
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        subresources={"status", "scale"},
    )


def write_kubeconfig(path: Path, server_url: str) -> Path:
    """A kubeconfig pointing at the mock server (plain HTTP, a dummy token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server_url.rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    """A mock API server and the operator running against it until the block exits; fails
    the test if the operator itself failed."""
    async with mock_api_server() as server, operator_on(server, tmp_path, monkeypatch) as harness:
        yield harness


@contextlib.asynccontextmanager
async def mock_api_server() -> AsyncIterator[ApiServerEmulator]:
    """The mock API server alone, serving until the block exits: an operator started on it
    with `operator_on`, stopped and started again sees the objects the first one left."""
    async with ApiServerEmulator() as server, kmock.Server(server):
        yield server


@contextlib.asynccontextmanager
async def operator_on(
    server: ApiServerEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    """The operator running against `server` until the block exits, with fresh fakes."""
    register_resources(server)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(server.url))
    # Never a real cluster: no in-cluster login even if the tests run in a pod.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
    )
    raft = FakeRaft()
    membership = FakeMembership()
    # A short timeout: once in a while an answer of the mock server never reaches the client
    # (seen with aiohttp 3.14); the call then fails and the timer's next run does the work.
    kube = Kube.from_environment(timeout_s=REQUEST_TIMEOUT_S)
    deps = Deps(kube=kube, fetch_raft_status=raft, membership=membership, clock=lambda: NOW)
    stop, ready = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            kopf.run(
                registry=build_registry(interval_s=INTERVAL_S),
                memo=kopf.Memo(deps=deps),
                clusterwide=True,
                standalone=True,
                stop_flag=stop,
                ready_flag=ready,
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failures.append(exc)

    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    if not await asyncio.to_thread(ready.wait, 10):
        raise AssertionError(f"the operator did not start: {failures}")
    try:
        harness = Harness(server=server, raft=raft, membership=membership)
        yield harness
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
    if thread.is_alive() or failures:
        raise AssertionError(f"the operator did not stop cleanly: {failures}")
