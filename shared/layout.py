"""Where everything lives under DATA_DIR: the one module that knows the folder layout.

    DATA_DIR/
      avatars/<id>/        portrait.png, voice.wav (when a sample was sent), avatar.json,
                           and the visual worker's face.json and thumbnail.jpg
      jobs/<id>/           job.json (mirror of the Redis record) and one folder per stage
                           (audio/, visual/, compose/), each with its manifest.json; while
                           a stage runs, its work dir (<stage>.tmp-<exec>/), its scratch
                           (audio.sentences/) and the pieces it publishes (<stage>.pieces/)
      media/<id>/          an upload (image.png or audio.flac) and its media.json
      .staging-owners/     one lock file per running orchestrator (see orchestrator/staging.py)

Uploads are assembled in `.staging-*` folders beside their final place (under avatars/ and
media/) and renamed into place whole; the file names inside an avatar's folder are the
constants below, so a folder being staged and a published one read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.store import LocalStore, Store

PORTRAIT = "portrait.png"
VOICE_SAMPLE = "voice.wav"
AVATAR_RECORD = "avatar.json"
THUMBNAIL = "thumbnail.jpg"
FACE = "face.json"
JOB_RECORD = "job.json"
MEDIA_RECORD = "media.json"


@dataclass(frozen=True)
class Layout:
    """The paths of one DATA_DIR, and the store that holds the files they name (shared/store.py:
    DATA_DIR itself by default; with STORE=s3 a bucket, DATA_DIR being scratch and cache)."""

    data_dir: Path
    backend: Store | None = field(default=None, compare=False, repr=False)

    @property
    def store(self) -> Store:
        return self.backend if self.backend is not None else LocalStore(Path(self.data_dir))

    @property
    def avatars(self) -> Path:
        return Path(self.data_dir) / "avatars"

    @property
    def jobs(self) -> Path:
        return Path(self.data_dir) / "jobs"

    @property
    def media(self) -> Path:
        return Path(self.data_dir) / "media"

    @property
    def staging_owners(self) -> Path:
        return Path(self.data_dir) / ".staging-owners"

    @property
    def upload_roots(self) -> tuple[Path, Path]:
        """The folders uploads are staged in (and deleted from): avatars/ and media/."""
        return self.avatars, self.media

    def avatar_dir(self, avatar_id: str) -> Path:
        return self.avatars / avatar_id

    def portrait(self, avatar_id: str) -> Path:
        return self.avatar_dir(avatar_id) / PORTRAIT

    def thumbnail(self, avatar_id: str) -> Path:
        return self.avatar_dir(avatar_id) / THUMBNAIL

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def job_record(self, job_id: str) -> Path:
        return self.job_dir(job_id) / JOB_RECORD

    def stage_dir(self, job_id: str, stage: str) -> Path:
        """Where a stage's published output lives (audio/, visual/ or compose/)."""
        return self.job_dir(job_id) / stage

    def work_dir(self, job_id: str, stage: str, exec_id: str) -> Path:
        """Where one execution of a stage writes its output before publishing it by a rename
        (shared/checkpoint.py)."""
        return self.job_dir(job_id) / f"{stage}.tmp-{exec_id}"

    def work_dirs(self, job_id: str, stage: str) -> list[Path]:
        """The work dirs of every execution of a stage still on disk."""
        return sorted(self.job_dir(job_id).glob(f"{stage}.tmp-*"))

    def scratch_dir(self, job_id: str, name: str) -> Path:
        """A stage's resumable partial work (`StageSpec.scratch`, e.g. audio.sentences/)."""
        return self.job_dir(job_id) / name

    def pieces_dir(self, job_id: str, stage: str) -> Path:
        """Where a stage publishes its pieces while it runs (audio.pieces/, visual.pieces/,
        compose.pieces/; shared/pieces.py)."""
        return self.job_dir(job_id) / f"{stage}.pieces"

    def media_dir(self, media_id: str) -> Path:
        return self.media / media_id

    def media_record(self, media_id: str) -> Path:
        return self.media_dir(media_id) / MEDIA_RECORD
