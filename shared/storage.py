"""Atomic, durable file writes, published folders, and the hashes that name their contents.

Every file JayAvatar publishes is written to a temp name beside its target, flushed, fsynced and
then `os.replace`d, so a reader sees either the old file, the new file, or nothing: never half.
Where those files live under DATA_DIR is shared/layout.py's business. What the app writes there
(faces, voices, texts) is its user's alone: every entry point calls `owner_only()` first.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

OWNER_ONLY_UMASK = 0o077  # files 0600, folders 0700


def owner_only() -> None:
    """Make what this process, and every process it starts (ffmpeg, Redis), creates from now on
    readable and writable by its own user only. The services share files as one user (the
    containers of docker-compose.yml too); the patched Piper voice under MODELS_DIR is made
    0644 explicitly."""
    os.umask(OWNER_ONLY_UMASK)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file beside `path`; on success it is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def publish_dir(staging: Path, final: Path) -> None:
    """Make a fully written staging folder durable and visible in one step: fsync each of its
    files, rename it to `final`, fsync the parent. A crash leaves either nothing or all of it."""
    for f in staging.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    os.rename(staging, final)
    fsync_dir(final.parent)
