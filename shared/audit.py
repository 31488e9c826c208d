"""The audit log: one JSON line per stage event (start, publish, piece, end, ...), which the
crash drills read to check what every execution did (scripts/drill/). Off unless AUDIT_LOG is
set."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Protocol

from shared.settings import Settings

logger = logging.getLogger(__name__)


class Auditor(Protocol):
    """Who writes the lines: a worker process's runtime (shared/stage.py `Runtime`)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def worker_name(self) -> str: ...


def audit(runtime: Auditor, event: str, **fields: Any) -> None:
    """Append one line to the audit log; a no-op when it is off."""
    path = runtime.settings.audit_log
    if path is None:
        return
    line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid(),
                       "worker": runtime.worker_name, **fields}) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk must not fail the stage for want of an audit line
        logger.warning("audit log %s: %s event not written: %s", path, event, exc)
