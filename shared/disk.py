"""Free space in DATA_DIR, and telling a full disk from any other failure.

Every process shares DATA_DIR (and Redis keeps its AOF there under `make run`), so one number
decides: below `MIN_FREE_MB` the API refuses new work and /healthz says "disk low", and a stage
that failed for lack of space waits for it instead of spending one of the job's attempts.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# ffmpeg and other tools only say it in words (their errors reach us as text)
_FULL_WORDS = ("No space left on device", "Disk quota exceeded")


def free_mb(path: Path) -> float:
    """Megabytes an unprivileged writer may still use on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / (1024 * 1024)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, says the disk (or quota) is full."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return True
        if any(words in str(cur) for words in _FULL_WORDS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def low_space_message(free: float, min_free: float) -> str:
    return (f"the data disk is nearly full: {free:.0f} MB free in DATA_DIR, at least "
            f"{min_free:.0f} MB needed (MIN_FREE_MB); free some space and retry")
