"""The library of uploaded media: background images and music tracks for compose options, and
recordings of speech for jobs to animate.

An upload is checked whole (decodable, sane size or length) and normalised (images to RGB
PNG, music to 48 kHz stereo FLAC, speech to 48 kHz mono FLAC) in a staging directory, which is
renamed to `media/<id>/` with its `media.json` only when everything checked out; a rejected
upload leaves nothing behind. Those files are the whole record (see shared/media_refs.py): no
Redis state to lose or rebuild.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from orchestrator.images import ImageDecoder, Picture
from orchestrator.settings import OrchestratorSettings
from orchestrator.staging import StagingArea, discard
from orchestrator.uploads import (
    Upload,
    check_file_name,
    check_music,
    check_name,
    check_speech,
    read_limited,
    save_limited,
)
from shared import media_refs
from shared.errors import InvalidInput, NotFound
from shared.layout import MEDIA_RECORD
from shared.models import MediaRecord
from shared.storage import atomic_write_json, sha256_file

logger = logging.getLogger(__name__)

KINDS = {"image": "a background image (PNG, JPEG, WebP or BMP)",
         "audio": "a music track (WAV, MP3, FLAC, OGG or M4A)",
         "speech": "a recording of speech (WAV, MP3, FLAC, OGG/Opus or M4A/AAC)"}
FILES = {"image": "image.png", "audio": "audio.flac", "speech": "speech.flac"}
LIST_LIMIT = 1000


class MediaLibrary:
    def __init__(self, settings: OrchestratorSettings, decoder: ImageDecoder,
                 staging: StagingArea) -> None:
        self.settings = settings
        self.decoder = decoder
        self.staging = staging
        self.layout = settings.layout

    def get(self, media_id: str) -> MediaRecord | None:
        return media_refs.load_record(self.layout, media_id)

    def file(self, record: MediaRecord) -> Path:
        path = self.layout.media_dir(record.id) / record.file
        return self.layout.store.fetch(path) or path  # into the cache from a remote store

    def list(self) -> list[MediaRecord]:
        """Every upload, newest first (at most LIST_LIMIT)."""
        names = self.layout.store.folders(self.layout.media)
        found = (self.get(name) for name in names if media_refs.MEDIA_ID.match(name))
        records = [r for r in found if r is not None]
        return sorted(records, key=lambda r: r.created_at, reverse=True)[:LIST_LIMIT]

    def delete(self, media_id: str) -> bool:
        folder = self.layout.media_dir(media_id)
        store = self.layout.store
        if self.get(media_id) is None or not (store.remote or folder.is_dir()):
            return False
        if folder.is_dir():
            discard(folder)
        store.remove_tree(folder)
        return True

    async def create(self, upload: Upload, kind: str, name: str | None) -> MediaRecord:
        if kind not in KINDS:
            expected = ", ".join(f"'{k}' ({v})" for k, v in KINDS.items())
            raise InvalidInput(f"kind {kind[:40]!r} is not known; expected one of: {expected}",
                               code="bad_kind")
        name = check_name(name, "media")
        check_file_name(upload, "file")
        run = self.decoder.run
        data = b""
        if kind != "speech":  # a recording may be long: streamed to disk below instead
            data = await run(read_limited, upload, "file", self.settings.max_upload_bytes)
        media_id = uuid.uuid4().hex[:16]
        staging = self.staging.folder(self.layout.media, media_id)
        try:
            picture = (await self.decoder.store(data, "background image", staging / "image.png")
                       if kind == "image" else None)
            if kind == "speech":
                await run(save_limited, upload, "file", self.settings.max_speech_upload_bytes,
                          staging / "original")
            record = await run(self._store, staging, media_id, kind, data, picture,
                               name or upload.filename or None)
            await run(self.layout.store.publish_dir, staging, self.layout.media_dir(media_id),
                      MEDIA_RECORD)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("media %s stored (%s, %d bytes)", media_id, kind, record.size)
        return record

    def _store(self, staging: Path, media_id: str, kind: str, data: bytes,
               picture: Picture | None, name: str | None) -> MediaRecord:
        """Normalise the checked upload into `staging`, with its media.json written last."""
        fields: dict[str, Any] = {}
        file = FILES[kind]
        original = staging / "original"
        if picture is not None:  # already stored by the decoder
            fields = {"width": picture.width, "height": picture.height}
        elif kind == "speech":  # already saved
            seconds, rate = check_speech(original, staging / file, self.settings.max_speech_s)
            fields = {"duration": round(seconds, 3), "sample_rate": rate}
            original.unlink()
        else:
            original.write_bytes(data)
            fields = {"duration": round(check_music(original, staging / file), 3)}
            original.unlink()
        path = staging / file
        record = MediaRecord(id=media_id, kind=kind, name=name, file=file,  # type: ignore[arg-type]
                             size=path.stat().st_size, sha256=sha256_file(path), **fields)
        atomic_write_json(staging / MEDIA_RECORD, record.model_dump(mode="json"))
        return record

    def require(self, ref: str, kind: str, option: str) -> MediaRecord:
        """The upload a job option names, of the right kind; NotFound or InvalidInput saying
        what to send if not."""
        media_id = media_refs.parse_ref(ref)
        record = self.get(media_id) if media_id else None
        if record is None:
            raise NotFound(f"'{option}' names {ref[:60]!r}, which is not an upload here; upload "
                           f"{KINDS[kind]} with POST /v1/media (kind={kind}) and use its ref "
                           "'media:<id>'", code="media_not_found")
        if record.kind != kind:
            raise InvalidInput(f"'{option}' names {ref!r}, which is an {record.kind} upload; "
                               f"'{option}' takes {KINDS[kind]} (kind={kind})",
                               code="wrong_media_kind")
        return record
