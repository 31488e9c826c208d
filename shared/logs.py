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


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
