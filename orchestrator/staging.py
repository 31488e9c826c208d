"""Staging folders where uploads are assembled, and the sweep that removes those of a process
that died (a crash mid-upload must not leave them behind for ever).

Each orchestrator process holds an exclusive lock on its own owner file in
`DATA_DIR/.staging-owners/` for as long as it lives, and names its staging folders after it
(`.staging-<owner>-<id>`). The lock goes when the process dies, however it dies, so at start an
orchestrator removes every staging folder whose owner's lock it can take (or whose owner file is
gone), and the `.deleted-*` folders a crash left half removed. Folders of live orchestrators
sharing the DATA_DIR are never touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from shared.layout import Layout

logger = logging.getLogger(__name__)

_STAGED = re.compile(r"^\.staging-(?:([0-9a-f]{12})-)?[0-9a-f]+$")


class StagingArea:
    def __init__(self, layout: Layout) -> None:
        self.owners = layout.staging_owners
        self.owners.mkdir(parents=True, exist_ok=True)
        self.owner = uuid.uuid4().hex[:12]
        self._fd = _lock_new(self.owners / f"{self.owner}.lock")

    def folder(self, root: Path, item_id: str) -> Path:
        """A new staging folder for `item_id` under `root` (avatars/ or media/)."""
        path = root / f".staging-{self.owner}-{item_id}"
        path.mkdir(parents=True)
        return path

    def sweep(self, roots: Iterable[Path]) -> int:
        """Remove staging folders of dead owners and half-deleted folders; how many went."""
        dead: dict[str | None, bool] = {self.owner: False}
        removed = 0
        for root in roots:
            if not root.is_dir():
                continue
            for path in root.iterdir():
                match = _STAGED.match(path.name)
                if match:
                    owner = match.group(1)  # None: made before owners existed
                    if owner not in dead:
                        dead[owner] = owner is None or self._owner_dead(owner)
                    if not dead[owner]:
                        continue
                elif not path.name.startswith(".deleted-"):
                    continue
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
                logger.info("removed %s, left by an interrupted upload or delete", path)
        return removed

    def _owner_dead(self, owner: str) -> bool:
        lock = self.owners / f"{owner}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # ours now: its process is gone; the file goes too
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        (self.owners / f"{self.owner}.lock").unlink(missing_ok=True)
        os.close(self._fd)


def discard(folder: Path) -> None:
    """Remove a published folder: renamed aside in one step first (readers see it whole or not
    at all), then deleted; a crash in between leaves a `.deleted-*` folder for the next sweep."""
    trash = folder.with_name(f".deleted-{folder.name}-{time.time_ns()}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _lock_new(path: Path) -> int:
    """Create and lock `path`; again if a sweeper took it for a dead owner's in between."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
