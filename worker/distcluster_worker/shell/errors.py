"""One error shape for every failure, and the guarantee that a request never crashes a node.

Every error leaves a node as ``{"error": {"code": ..., "message": ..., **extra}}`` with a
fitting status. Roles raise ``ApiError`` (or return ``error_response``); the node's
middleware, through ``failure_response``, turns ``ApiError``, aiohttp's HTTP exceptions
(unknown route, wrong method, body too large) and any unexpected exception into that
shape. Unexpected exceptions become a 500 with code
``internal`` and are logged with their traceback; the handler's task ends but the server
keeps serving. ``asyncio.CancelledError`` (a client went away, or shutdown) is not an
``Exception`` and passes through, as it must.

``parse_json`` is the single door for request bodies: it bounds their size, rejects what is
not a JSON object, and validates with a pydantic model, so that a role's handler only ever
sees a typed, valid value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from distcluster_worker.shell import jsonio
from distcluster_worker.shell.logs import get_logger

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_BODY_BYTES = 65536
MAX_BODY_KEY = web.AppKey("distcluster_max_body_bytes", int)

_log = get_logger("distcluster.http")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: status, machine-readable code, human message and extra fields.

    Extra fields may be given as a mapping (``extra={"cycle": [...]}``) or as keywords
    (``cycle=[...]``); both end up beside ``code`` and ``message`` in the body.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra: dict[str, Any] = {**(extra or {}), **fields}

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, **self.extra)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """A JSON error answer: ``{"error": {"code", "message", ...extra}}``."""
    return web.json_response(error_body(code, message, **extra), status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _http_exception_response(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_" + str(exc.status))
    message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
    if exc.status == 413:
        message = "request body is too large"
    elif exc.status == 404:
        message = "no such route"
    response = error_response(exc.status, code, message)
    allow = exc.headers.get("Allow")
    if allow:
        response.headers["Allow"] = allow
    return response


def failure_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON error answer to a handler's failure (`node_middleware` calls it for every
    exception a handler raises). An HTTP exception below 400 (a redirect) is re-raised."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _http_exception_response(exc)
    return unhandled_failure(request.method, request.path, exc)


def unhandled_failure(method: str, path: str, exc: Exception) -> web.Response:
    """The JSON 500 answering a failure no handler meant; its cause goes to the log."""
    _log.error("unhandled error in handler", exc_info=exc, extra={"method": method, "path": path})
    return error_response(500, "internal", "internal error; see the node's log")


async def read_body(request: web.Request) -> bytes:
    """The request body, refused with 413 ``too_large`` beyond the app's size bound."""
    limit = request.app.get(MAX_BODY_KEY, DEFAULT_MAX_BODY_BYTES)
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "too_large", f"request body is larger than {limit} bytes")
    content = request.content
    if length is not None and content.is_eof():
        # The whole body came with the headers (the common case for small JSON
        # bodies): take it from the buffer instead of `request.read()`'s read loop.
        body = content.read_nowait()
    else:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "too_large", f"request body is larger than {limit} bytes") from None
    if len(body) > limit:
        raise ApiError(413, "too_large", f"request body is larger than {limit} bytes")
    return body


async def parse_json(request: web.Request, model: type[M]) -> M:
    """Read, decode and validate a JSON object body as ``model``.

    400 ``bad_json`` when the body is not a JSON object, 400 ``bad_request`` with
    ``details: [{field, message}]`` when it does not fit the model, 413 ``too_large``.
    """
    return parse_body(await read_body(request), model)


def parse_body(body: bytes, model: type[M]) -> M:
    """Decode and validate a JSON object body already read (see ``parse_json``)."""
    try:
        # orjson refuses NaN/Infinity, invalid UTF-8 and nesting past 1024 levels.
        value = jsonio.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ApiError(
            400, "bad_request", "the request body is invalid", details=validation_details(exc)
        ) from None


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as ``[{"field": "a.b", "message": ...}]`` (no input echoed back)."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(body)",
            "message": error["msg"],
        }
        for error in exc.errors()
    ]
