"""Health probe of the local node: exit 0 when it answers 200, else 1.

The container HEALTHCHECK runs ``python -m distcluster_worker.probe`` every few seconds
in every node container, so this module imports only the standard library: going through
the ``distcluster`` console script would load aiohttp, redis and every role first (about
ten times the CPU per probe). ``distcluster probe`` is the same function for people.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence


def probe(path: str = "/health", port: int | None = None, timeout_s: float = 2.0) -> int:
    """GET ``http://127.0.0.1:{port}{path}`` (port default ``$PORT``); 0 on 200, else 1."""
    chosen = port if port is not None else os.environ.get("PORT", "8001")
    url = f"http://127.0.0.1:{chosen}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"distcluster probe: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"distcluster probe: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distcluster_worker.probe")
    parser.add_argument("--path", choices=("/health", "/ready"), default="/health")
    parser.add_argument("--port", type=int, default=None, help="default: $PORT")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)
    return probe(args.path, args.port, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
