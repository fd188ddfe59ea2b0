"""Log lines are single JSON objects with the fields a log pipeline needs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from distcluster_worker.shell.logs import JsonFormatter, NodeLogger, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_configured_logging_writes_json_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("node7", "INFO")
    log = get_logger("distcluster.test")
    log.debug("hidden")
    log.info("hello %s", "world", extra={"term": 3, "peer": "node2"})
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1
    line = lines[0]
    assert line["msg"] == "hello world"
    assert line["level"] == "INFO"
    assert line["node_id"] == "node7"
    assert line["logger"] == "distcluster.test"
    assert (line["term"], line["peer"]) == (3, "node2")
    assert str(line["ts"]).endswith("Z") and "T" in str(line["ts"])


def test_exceptions_are_logged_as_exc(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("node1", "DEBUG")
    try:
        raise ValueError("broken")
    except ValueError:
        get_logger("x").exception("failed")
    (line,) = _lines(capsys.readouterr().err)
    assert line["level"] == "ERROR"
    assert "ValueError: broken" in str(line["exc"])


def test_unencodable_extras_are_stringified() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "m", None, None)
    record.obj = object()
    line = json.loads(JsonFormatter("n").format(record))
    assert str(line["obj"]).startswith("<object object")


def test_node_logger_adds_node_id_and_keeps_extra(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("process-default", "INFO")
    NodeLogger(get_logger("y"), "node3").info("m", extra={"k": 1})
    (line,) = _lines(capsys.readouterr().err)
    assert line["node_id"] == "node3"
    assert line["k"] == 1
