"""Fixtures for the lock table tests (the driver itself is in lock_driver.py)."""

from __future__ import annotations

import pytest
from lock_driver import Driver


@pytest.fixture
def d() -> Driver:
    return Driver()
