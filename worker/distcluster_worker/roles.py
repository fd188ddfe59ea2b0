"""Which node class serves each role (``NODE_TYPE``).

Roles are named by module path strings and imported only when asked for, so this registry
(and the CLI that uses it) can exist before a role does, and starting one role never
imports another. A role that is not built yet is refused with a sentence saying so, before
anything is started.
"""

from __future__ import annotations

import importlib

from distcluster_worker.shell.node import BaseNode

ROLES: dict[str, str] = {
    "lock_manager": "distcluster_worker.lock_role.node:LockNode",
    "queue": "distcluster_worker.queue_role.node:QueueNode",
    "cache": "distcluster_worker.cache_role.node:CacheNode",
}

NOT_BUILT: dict[str, str] = {}
"""Roles named but not built yet, with the sentence that refuses them (none today)."""

ALL_ROLES = ("lock_manager", "queue", "cache")


class RoleNotAvailable(Exception):  # noqa: N818 - the name the roles API fixed
    """The role is unknown, not built yet, or failed to import."""


def node_class(role: str) -> type[BaseNode]:
    """The BaseNode subclass serving ``role``; RoleNotAvailable with the reason otherwise."""
    if role in NOT_BUILT:
        raise RoleNotAvailable(NOT_BUILT[role])
    target = ROLES.get(role)
    if target is None:
        known = ", ".join(ALL_ROLES)
        raise RoleNotAvailable(f"unknown role {role!r}; the roles are {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RoleNotAvailable(f"the {role} role could not be loaded: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, BaseNode):
        raise RoleNotAvailable(f"the {role} role: {target} is not a BaseNode subclass")
    return cls
