"""The checkpoint protocol of DESIGN.md section 3: work in a temp dir, publish by one rename.

A stage writes its files into `jobs/<id>/<stage>.tmp-<exec>/`, then `manifest.json` last, then
the whole directory is renamed to `jobs/<id>/<stage>/` and the parent fsynced. A directory
without a valid manifest (every file present with its size and sha256) is garbage: it is never
served or consumed, and a rerun replaces it.

With a remote store (shared/store.py) the work dir is this host's scratch: publishing uploads
its files, the manifest last (the old manifest is deleted first), and a reader takes the
manifest from the store and fetches the files it lists into the cache, checked the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.models import OutputFile, StageManifest
from shared.storage import atomic_write_json, fsync_dir, read_json, sha256_file
from shared.store import Store

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def load_manifest(stage_dir: Path, *, verify: bool = True, store: Store | None = None,
                  fetch: bool | None = None) -> StageManifest | None:
    """The stage's manifest if it and every file it lists are intact, else None. From a
    remote `store`, the files are fetched into `stage_dir` (the cache) when `fetch` (by default
    when `verify`), else only their sizes are compared."""
    if store is not None and store.remote:
        return _load_remote(Path(stage_dir), store, verify,
                            verify if fetch is None else fetch)
    path = Path(stage_dir) / MANIFEST
    try:
        manifest = StageManifest.model_validate(read_json(path))
    except (OSError, ValueError, ValidationError):
        return None
    for entry in manifest.files:
        f = Path(stage_dir) / entry.name
        try:
            if f.stat().st_size != entry.size:
                return None
        except OSError:
            return None
        if verify and sha256_file(f) != entry.sha256:
            logger.warning("checkpoint %s: %s does not match its sha256", stage_dir, entry.name)
            return None
    return manifest


def _load_remote(stage_dir: Path, store: Store, verify: bool,
                 fetch: bool) -> StageManifest | None:
    raw = store.read_bytes(stage_dir / MANIFEST)
    try:
        manifest = StageManifest.model_validate_json(raw or b"")
    except ValidationError:
        return None
    if not fetch:
        sizes = store.sizes(stage_dir)
        return manifest if all(sizes.get(f.name) == f.size for f in manifest.files) else None
    for entry in manifest.files:
        local = store.fetch(stage_dir / entry.name, size=entry.size,
                            sha256=entry.sha256 if verify else None)
        if local is None or local.stat().st_size != entry.size or (
                verify and sha256_file(local) != entry.sha256):
            logger.warning("checkpoint %s: %s is missing or does not match", stage_dir,
                           entry.name)
            return None
    atomic_write_json(stage_dir / MANIFEST, manifest.model_dump(mode="json"))  # the cache's
    return manifest


def write_manifest(work_dir: Path, manifest_fields: dict[str, Any],
                   files: list[str]) -> StageManifest:
    """Hash the listed files and write the manifest last."""
    entries = []
    for name in files:
        path = Path(work_dir) / name
        entries.append(OutputFile(name=name, size=path.stat().st_size, sha256=sha256_file(path)))
    for name in files:  # the files' data must be durable before the manifest vouches for it
        with open(Path(work_dir) / name, "rb") as fh:
            os.fsync(fh.fileno())
    manifest = StageManifest(files=entries, **manifest_fields)
    atomic_write_json(Path(work_dir) / MANIFEST, manifest.model_dump(mode="json"))
    return manifest


def publish(work_dir: Path, final_dir: Path, store: Store | None = None) -> bool:
    """Rename a finished work dir into place. False if a valid result of the same input is
    already there (a twin's); one made from other input is replaced, never kept."""
    final_dir = Path(final_dir)
    if store is not None and store.remote:
        if _same_input(final_dir, work_dir, store):
            return False
        store.publish_dir(work_dir, final_dir, MANIFEST)
        return True
    if final_dir.exists():
        if _same_input(final_dir, work_dir):
            return False
        trash = final_dir.with_name(f"{final_dir.name}.garbage-{time.time_ns()}")
        os.rename(final_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(work_dir, final_dir)
    except OSError:
        if _same_input(final_dir, work_dir):  # lost a race to a twin
            return False
        raise
    fsync_dir(final_dir.parent)
    return True


def _same_input(final_dir: Path, work_dir: Path, store: Store | None = None) -> bool:
    """Whether `final_dir` holds a valid result made from the same input as `work_dir`'s."""
    published = load_manifest(final_dir, verify=False, store=store, fetch=False)
    if published is None:
        return False
    made = load_manifest(work_dir, verify=False)
    return made is None or made.input_hash == published.input_hash


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
