"""JSON logs: one object per line on stderr, so that a cluster's logs can be merged and queried.

Each line has ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``node_id``, ``logger`` and
``msg``, then every field given with ``extra=``, then ``exc`` (the formatted traceback) when
an exception is attached. Values that JSON cannot encode are written with ``str()`` so that
logging never raises.

The node id normally comes from ``configure_logging`` (one node per process), but a record
may carry its own ``node_id`` (``NodeLogger`` adds it), which matters when tests run several
nodes in one process.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Format records as single-line JSON objects."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "node_id": getattr(record, "node_id", self.node_id),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(node_id: str, level: str) -> None:
    """Send every logger's records, as JSON lines, to stderr at ``level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log duplicates the shell's own request log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """A stdlib logger; kept as a function so the logging backend can change in one place."""
    return logging.getLogger(name)


class NodeLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter adding ``node_id`` while keeping the caller's own ``extra`` fields."""

    def __init__(self, logger: logging.Logger, node_id: str) -> None:
        super().__init__(logger, {"node_id": node_id})
        self.node_id = node_id

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {"node_id": self.node_id, **(kwargs.get("extra") or {})}
        return msg, kwargs
