"""Uploaded media (background images, music): where they live and how job options name them.

The orchestrator checks and stores an upload in `DATA_DIR/media/<id>/` (the file and its
`media.json`, renamed into place together); job options refer to it as `media:<id>`. The files
are the only record, so media survive a lost Redis and any worker sharing DATA_DIR can read them.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from shared.errors import StageFailed
from shared.models import MediaRecord

MEDIA_ID = re.compile(r"^[0-9a-f]{16}$")
_REF = re.compile(r"^media:([0-9a-f]{16})$")
RECORD_FILE = "media.json"


def media_root(data_dir: Path) -> Path:
    return Path(data_dir) / "media"


def parse_ref(value: str | None) -> str | None:
    """The media id in a `media:<id>` option value, or None for anything else."""
    match = _REF.match(value or "")
    return match.group(1) if match else None


def load_record(data_dir: Path, media_id: str) -> MediaRecord | None:
    """The record of an upload, or None if there is none (or it is unreadable)."""
    if not MEDIA_ID.match(media_id):
        return None
    path = media_root(data_dir) / media_id / RECORD_FILE
    try:
        return MediaRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def resolve(data_dir: Path, ref: str, kind: str, what: str) -> Path:
    """The file behind a `media:<id>` option of the expected kind, for a stage to read.

    Raises StageFailed naming the option (`what`) when the upload is gone or of the wrong kind.
    """
    media_id = parse_ref(ref)
    record = load_record(data_dir, media_id) if media_id else None
    path = media_root(data_dir) / str(media_id) / record.file if record else None
    if record is None or path is None or not path.is_file():
        raise StageFailed(f"the {what} {ref!r} is no longer stored (deleted, or DATA_DIR is not "
                          "shared with this worker); upload it again with POST /v1/media and "
                          "submit a new job")
    if record.kind != kind:
        raise StageFailed(f"the {what} {ref!r} is an {record.kind} upload; expected {kind}")
    return path
