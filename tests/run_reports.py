"""Whether the test a fixture serves has failed, so its teardown can print what helps.

The root conftest keeps each phase's report on the test item (`report_setup`,
`report_call`); fixtures that start processes or containers call `test_failed(request)`
at teardown and print their logs only then.
"""

from __future__ import annotations

import pytest


def test_failed(request: pytest.FixtureRequest) -> bool:
    reports = (getattr(request.node, f"report_{when}", None) for when in ("setup", "call"))
    return any(r is not None and r.failed for r in reports)


# Not a test, despite its name: pytest must not collect it.
test_failed.__test__ = False  # type: ignore[attr-defined]
