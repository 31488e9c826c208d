"""Every API error is JSON `{error, message}`: never a stack trace, never a 5xx for bad input.

The orchestrator and its routes refuse with shared.errors kinds (InvalidInput, NotFound, Busy...)
and never name a status; STATUS says which HTTP status each kind answers with, and a Busy error's
retry_after becomes Retry-After. ApiError is for the refusals only HTTP knows (401 for a wrong
token, 410 for a result gone from disk).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.disk import is_disk_full
from shared.errors import (
    Busy,
    Conflict,
    InvalidInput,
    JayAvatarError,
    Malformed,
    NotFound,
    TooLarge,
    Unsupported,
)

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal with an HTTP status of its own; domain refusals are shared.errors kinds."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


STATUS: dict[type[JayAvatarError], int] = {
    Malformed: 400, NotFound: 404, Conflict: 409, TooLarge: 413, Unsupported: 415,
    InvalidInput: 422, Busy: 503,
}


def status_of(exc: JayAvatarError) -> int | None:
    """The HTTP status of a domain error: its nearest class in STATUS (None: not a refusal)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


def _body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
    kind = err.get("type", "")
    if kind == "missing":
        return f"'{loc}' is required"
    if kind == "extra_forbidden":
        return f"'{loc}' is not a known field"
    if kind == "json_invalid":
        return "the body is not valid JSON (send UTF-8 JSON with Content-Type: application/json)"
    return f"'{loc}': {err.get('msg', 'invalid value')}"


def _queue_error(exc: redis.RedisError) -> JSONResponse:
    """The answer when Redis fails a request: full disk, refused credentials, or away."""
    logger.warning("Redis unavailable: %s", exc)
    if is_disk_full(exc):  # "MISCONF Errors writing to the AOF file: No space left..."
        return JSONResponse(_body("disk_full", "nothing was accepted: the job queue cannot "
                                  "write to the full data disk; free some space in DATA_DIR "
                                  "and retry"), status_code=507, headers={"Retry-After": "30"})
    if isinstance(exc, redis.AuthenticationError):
        return JSONResponse(_body("queue_unavailable", "the job queue (Redis) refuses this "
                                  "server's credentials (REDIS_URL); nothing was accepted "
                                  "until the operator fixes them"), status_code=503)
    return JSONResponse(_body("queue_unavailable",
                              "the job queue (Redis) is unreachable or restarting; nothing "
                              "was accepted, retry in a few seconds"),
                        status_code=503, headers={"Retry-After": "2"})


def _http_message(request: Request, exc: StarletteHTTPException) -> str:
    """Starlette's own refusals ("Not Found", "Method Not Allowed") as sentences."""
    message = str(exc.detail)
    where = f"{request.method} {request.url.path[:200]}"
    if exc.status_code == 400 and "parsing the body" in message:
        return ("the request body could not be parsed; send UTF-8 JSON with "
                "Content-Type: application/json, or multipart/form-data for uploads")
    if exc.status_code == 404 and message == "Not Found":
        return (f"there is nothing at {where}; the API's routes are under /v1 (see the REST "
                "API section of the README)")
    if exc.status_code == 405:
        return (f"{where} is not allowed; the REST API section of the README lists the methods "
                "each path takes")
    return message


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(JayAvatarError)
    async def refused(request: Request, exc: JayAvatarError) -> JSONResponse:
        status = status_of(exc)
        if status is None:  # StageFailed, ConfigError...: not a refusal of the request
            return await unexpected(request, exc)
        headers = ({"Retry-After": str(exc.retry_after)}
                   if isinstance(exc, Busy) and exc.retry_after is not None else None)
        return JSONResponse(_body(exc.code, exc.message), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_describe(e) for e in exc.errors()[:5])
        return JSONResponse(_body("invalid_request", f"invalid request: {problems}"),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(_body("bad_body" if exc.status_code == 400 else "http_error",
                                  _http_message(request, exc)),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        return _queue_error(exc)

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        if is_disk_full(exc):  # the disk filled mid-request: the upload's staging is gone
            logger.warning("disk full on %s %s: %s", request.method, request.url.path, exc)
            return JSONResponse(_body("disk_full", "nothing was stored: the data disk is full; "
                                      "free some space in DATA_DIR and retry"),
                                status_code=507, headers={"Retry-After": "30"})
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal_error", "the server hit an unexpected error; "
                                  "it is logged, and retrying may help"), status_code=500)
