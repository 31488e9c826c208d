"""References to uploaded media (`media:<id>` in job options): parsed, and read back from disk.

The orchestrator checks and stores an upload in `DATA_DIR/media/<id>/` (the file and its
`media.json`, renamed into place together: orchestrator/media_library.py); job options refer to
it as `media:<id>`. The files are the only record, so media survive a lost Redis; a worker reads
them through the job-file store (shared/store.py: DATA_DIR, or a bucket it fetches them from).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from shared.errors import StageFailed
from shared.layout import Layout
from shared.models import MediaRecord

MEDIA_ID = re.compile(r"^[0-9a-f]{16}$")
_REF = re.compile(r"^media:([0-9a-f]{16})$")


def parse_ref(value: str | None) -> str | None:
    """The media id in a `media:<id>` option value, or None for anything else."""
    match = _REF.match(value or "")
    return match.group(1) if match else None


def load_record(layout: Layout, media_id: str) -> MediaRecord | None:
    """The record of an upload, or None if there is none (or it is unreadable)."""
    if not MEDIA_ID.match(media_id):
        return None
    try:
        return MediaRecord.model_validate_json(
            layout.store.read_bytes(layout.media_record(media_id)) or b"")
    except (OSError, ValidationError):
        return None


def resolve(layout: Layout, ref: str, kind: str, what: str) -> Path:
    """The file behind a `media:<id>` option of the expected kind, for a stage to read.

    Raises StageFailed naming the option (`what`) when the upload is gone or of the wrong kind.
    """
    media_id = parse_ref(ref)
    record = load_record(layout, media_id) if media_id else None
    path = layout.media_dir(record.id) / record.file if record else None
    if path is not None:
        path = layout.store.fetch(path)  # into this host's cache from a remote store
    if record is None or path is None or not path.is_file():
        raise StageFailed(f"the {what} {ref!r} is no longer stored (deleted, or DATA_DIR is not "
                          "shared with this worker); upload it again with POST /v1/media and "
                          "submit a new job")
    if record.kind != kind:
        raise StageFailed(f"the {what} {ref!r} is an {record.kind} upload; expected {kind}")
    return path
