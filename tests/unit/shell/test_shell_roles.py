"""The role registry imports roles lazily and refuses unbuilt ones with a reason."""

from __future__ import annotations

import pytest

from distcluster_worker import roles
from distcluster_worker.roles import RoleNotAvailable, node_class
from distcluster_worker.shell.node import BaseNode


def test_unbuilt_roles_are_refused_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(roles.NOT_BUILT, "cache", "the cache role is not built yet (see issue 4)")
    with pytest.raises(RoleNotAvailable, match="the cache role is not built yet.*issue 4"):
        node_class("cache")


@pytest.mark.parametrize("role", ["lock_manager", "queue", "cache"])
def test_every_role_is_built(role: str) -> None:
    assert issubclass(node_class(role), BaseNode)


def test_unknown_role() -> None:
    with pytest.raises(RoleNotAvailable, match="unknown role 'mesh'"):
        node_class("mesh")


def test_missing_module_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(roles.ROLES, "lock_manager", "distcluster_worker.no_such:Node")
    with pytest.raises(RoleNotAvailable, match="could not be loaded"):
        node_class("lock_manager")


def test_non_node_class_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(roles.ROLES, "lock_manager", "distcluster_worker.shell.rpc:RpcClient")
    with pytest.raises(RoleNotAvailable, match="not a BaseNode subclass"):
        node_class("lock_manager")


def test_registered_role_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(roles.ROLES, "lock_manager", "distcluster_worker.shell.node:BaseNode")
    assert node_class("lock_manager") is BaseNode
