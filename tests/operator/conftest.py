"""Fixtures for the operator's pure parts: one parsed spec per case of `op_cases.CASES`."""

from __future__ import annotations

import pytest
from op_cases import CASES

from distcluster_operator.spec import ClusterSpec, parse_spec


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, ClusterSpec]:
    """(case id, parsed spec) for each of `CASES`."""
    return request.param, parse_spec(CASES[request.param])
