"""The role registry imports roles lazily and refuses unbuilt ones with a reason."""

from __future__ import annotations

import pytest

from distcluster_worker import roles
from distcluster_worker.roles import RoleNotAvailable, node_class
from distcluster_worker.shell.node import BaseNode


@pytest.mark.parametrize(("role", "issue"), [("cache", "issue 4")])
def test_unbuilt_roles_are_refused_with_a_reason(role: str, issue: str) -> None:
    with pytest.raises(RoleNotAvailable, match=f"the {role} role is not built yet.*{issue}"):
        node_class(role)


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
