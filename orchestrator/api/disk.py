"""Refuse new work while DATA_DIR is nearly full, before anything is read or written.

A pure ASGI middleware: a POST that would create work (a job, an avatar, an upload) gets
`507 {"error": "disk_low", ...}` while free space is below MIN_FREE_MB, before its body is read,
so Redis (whose AOF lives on that disk under `make run`) never hits the wall because of new
work. Reads, cancels and deletes still work: they are how space comes back.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.disk import free_mb, low_space_message

logger = logging.getLogger(__name__)

GUARDED = ("/v1/jobs", "/v1/avatars", "/v1/media", "/v1/sessions")  # POSTs that make work
CHECK_EVERY_S = 0.5


class DiskGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._free: tuple[float, float] | None = None  # (monotonic time, MB free)

    def _free_mb(self, data_dir: Path) -> float:
        """Free space, read at most every CHECK_EVERY_S: statvfs waits on a busy disk, and at
        hundreds of submissions a second one reading per second is plenty."""
        now = time.monotonic()
        if self._free is None or now - self._free[0] >= CHECK_EVERY_S:
            self._free = (now, free_mb(data_dir))
        return self._free[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].rstrip("/") in GUARDED):
            st = getattr(scope["app"].state, "jayavatar", None)
            if st is not None:
                need = st.settings.min_free_mb
                try:
                    free = self._free_mb(st.settings.data_dir)
                except OSError as exc:  # DATA_DIR gone: say so rather than fail later
                    logger.warning("DATA_DIR %s unreadable: %s", st.settings.data_dir, exc)
                    free = 0.0
                if free < need:
                    logger.warning("refused %s %s: %.0f MB free in DATA_DIR, %.0f MB needed",
                                   scope["method"], scope["path"], free, need)
                    response = JSONResponse(
                        {"error": "disk_low", "message": "nothing was accepted: "
                         + low_space_message(free, need)},
                        status_code=507, headers={"Retry-After": "30"})
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
