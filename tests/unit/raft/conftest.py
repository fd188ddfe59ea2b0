"""Fixtures for the Raft core tests; the helpers themselves live in `raft_harness`."""

from __future__ import annotations

import pytest
from raft_harness import Cluster


@pytest.fixture
def cluster() -> Cluster:
    """Three nodes a, b, c with the default configuration, nobody elected yet."""
    return Cluster()
