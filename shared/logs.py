"""Logging set-up, once per entry point: every line says which job and stage it is about.

A stage execution runs inside `job_context(job_id, stage)`; a filter on the handler copies the
context into each record, so `grep job=<id>` on any process's log follows one job through it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

FORMAT = "%(asctime)s %(levelname)s %(process)d job=%(job)s stage=%(stage)s %(name)s: %(message)s"
_context: ContextVar[tuple[str, str]] = ContextVar("jayavatar_log_context", default=("-", "-"))


@contextmanager
def job_context(job_id: str, stage: str = "-") -> Iterator[None]:
    """Tag every log line written in this block (in this thread or task) with job and stage."""
    token = _context.set((job_id, stage))
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds `job` and `stage` to each record (from `job_context`, else "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job"):
            record.job, record.stage = _context.get()
        return True


class SocketQueryFilter(logging.Filter):
    """Cuts the query string out of uvicorn's WebSocket handshake lines (`"WebSocket
    /v1/sessions/x/ws?token=..." [accepted]`), which it writes even with the access log off:
    the API takes its token only in a header or the session cookie, and one that a client put
    in the URL must not end up in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (isinstance(record.msg, str) and '"WebSocket %s"' in record.msg
                and isinstance(args, tuple) and len(args) >= 2 and isinstance(args[1], str)
                and "?" in args[1]):
            record.args = (args[0], args[1].split("?", 1)[0] + "?<query not logged>", *args[2:])
        return True


def hide_socket_queries() -> None:
    """Install SocketQueryFilter on uvicorn's logger (once)."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, SocketQueryFilter) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(SocketQueryFilter())


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
