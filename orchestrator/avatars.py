"""Avatars: a validated portrait (+ optional voice sample) with its face found once and cached.

The orchestrator holds no vision libraries, so face analysis is an rq job on the `avatar` queue
that the visual workers serve; creation awaits its answer without holding a thread, and at most
MAX_PENDING_AVATARS uploads are in progress at once. Files are assembled in a staging
directory and renamed into `avatars/<id>/` only when everything checked out, so a rejected
upload leaves nothing behind.
"""

from __future__ import annotations

import builtins
import logging
import shutil
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import redis
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from orchestrator import voice_sample
from orchestrator.images import ImageDecoder
from orchestrator.settings import OrchestratorSettings
from orchestrator.staging import StagingArea, discard
from orchestrator.uploads import (
    Upload,
    check_file_name,
    check_name,
    check_voice_sample,
    read_limited,
)
from shared import keys, pipeline
from shared.errors import Busy, Conflict, InvalidInput
from shared.layout import AVATAR_RECORD, FACE, PORTRAIT, THUMBNAIL, VOICE_SAMPLE
from shared.models import AvatarRecord
from shared.storage import atomic_write_json, sha256_file

logger = logging.getLogger(__name__)


def parse_avatar(avatar_id: str, raw: bytes | str) -> AvatarRecord:
    """A stored avatar record; Conflict saying what to do when it cannot be read, so that one
    damaged record breaks neither the listing nor anything else."""
    try:
        return AvatarRecord.model_validate_json(raw)
    except ValueError as exc:  # pydantic's ValidationError is one
        logger.warning("avatar %s: stored record cannot be read: %s", avatar_id,
                       type(exc).__name__)
        raise Conflict(f"avatar {avatar_id}'s stored record is damaged and cannot be used; "
                       f"delete it (DELETE /v1/avatars/{avatar_id}) and upload the portrait "
                       "again", code="avatar_damaged") from exc


class AvatarService:
    def __init__(self, conn: redis.Redis, settings: OrchestratorSettings, decoder: ImageDecoder,
                 staging: StagingArea) -> None:
        self.conn = conn
        self.settings = settings
        self.decoder = decoder
        self.staging = staging
        self.layout = settings.layout
        self.pending = 0  # uploads in progress in this process
        # threads for the analysis's short Redis calls: never queued behind long upload work
        self.polls = anyio.CapacityLimiter(4)

    def get(self, avatar_id: str) -> AvatarRecord | None:
        """The avatar, or None if there is none; Conflict if its stored record cannot be read."""
        raw = self.conn.get(keys.avatar(avatar_id))
        return parse_avatar(avatar_id, raw) if raw else None

    def list(self) -> list[AvatarRecord]:
        out = []
        for raw_id in self.conn.zrevrange(keys.AVATARS, 0, 999):
            try:
                rec = self.get(keys.text(raw_id))
            except Conflict:  # a damaged record hides no other avatar (its id still answers)
                continue
            if rec is not None:
                out.append(rec)
        return out

    def delete(self, avatar_id: str) -> bool:
        if not self.conn.delete(keys.avatar(avatar_id)):
            return False
        self.conn.zrem(keys.AVATARS, avatar_id)
        folder = self.layout.avatar_dir(avatar_id)
        if folder.exists():
            discard(folder)
        self.layout.store.remove_tree(folder)
        return True

    async def create(self, portrait: Upload, voice: Upload | None, name: str | None,
                     face: int | None = None) -> tuple[AvatarRecord, builtins.list[str]]:
        """Check, stage, analyse and publish an avatar. Waiting for the analysis holds no
        thread; past MAX_PENDING_AVATARS uploads at once, the next is refused (Busy) at the door."""
        limit = self.settings.max_pending_avatars
        if self.pending >= limit:
            raise Busy(f"{limit} avatar uploads are already being checked and analysed; "
                       "retry in a few seconds", code="too_many_uploads", retry_after=5)
        self.pending += 1
        try:
            return await self._create(portrait, voice, name, face)
        finally:
            self.pending -= 1

    async def _create(self, portrait: Upload, voice: Upload | None, name: str | None,
                      face: int | None) -> tuple[AvatarRecord, builtins.list[str]]:
        s, run = self.settings, self.decoder.run
        name = check_name(name, "avatar")
        check_file_name(portrait, "portrait")
        if voice is not None:
            check_file_name(voice, "voice_sample")
        data = await run(read_limited, portrait, "portrait", s.max_upload_bytes)
        voice_data = (await run(read_limited, voice, "voice_sample", s.max_upload_bytes)
                      if voice else None)

        avatar_id = uuid.uuid4().hex[:16]
        staging = self.staging.folder(self.layout.avatars, avatar_id)
        try:
            picture = await self.decoder.store(data, "portrait", staging / PORTRAIT)
            del data
            seconds = await run(self._store_voice, staging, voice_data)
            found = await self._analyze(staging, face or 0)
            if found["faces"] == 0:
                raise InvalidInput("no face was found in the portrait; send a photo in which one "
                                   "face is clearly visible and turned towards the camera",
                                   code="no_face")
            chosen = found.get("chosen", 0)
            if chosen is None:
                raise InvalidInput(f"face {face} was asked for, but the portrait has "
                                   f"{found['faces']} face(s), numbered 0 to {found['faces'] - 1} "
                                   "from the largest; send one of those numbers",
                                   code="no_such_face")
            notes = list(picture.notes)
            if found.get("turned"):
                notes.append(f"the photo lay on its side or upside down: it was turned "
                             f"{found['turned']} degrees clockwise to stand the face upright")
            if found["faces"] > 1 and face is None:
                notes.append(f"{found['faces']} faces were found; the largest (face 0) is "
                             "animated; send face=<number> to choose another (see the "
                             "avatar's thumbnail for the numbers)")
            notes.extend(found.get("notes", []))  # how a tight photo is framed
            if seconds is not None:
                notes.append(await run(voice_sample.note, staging / VOICE_SAMPLE))
            record = AvatarRecord(
                id=avatar_id, name=name, width=found.get("width", picture.width),
                height=found.get("height", picture.height),
                face_box=tuple(found["boxes"][chosen]), faces_found=found["faces"],
                face_index=chosen,
                has_voice_sample=seconds is not None, voice_sample_seconds=seconds,
                portrait_sha256="", voice_sha256=None)
            record = await run(self._publish, staging, record)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if self.layout.store.remote:
                await run(self.layout.store.remove_tree, staging)
            raise
        if self.layout.store.remote:  # its copy for the visual worker
            await run(self.layout.store.remove_tree, staging)
        await run(self._index, record)
        logger.info("avatar %s created (%d face(s))", avatar_id, record.faces_found)
        return record, notes

    def _store_voice(self, staging: Path, voice_data: bytes | None) -> float | None:
        """Check the voice sample and store it (VOICE_SAMPLE); its seconds (None without one)."""
        if voice_data is None:
            return None
        original = staging / "voice_original"
        original.write_bytes(voice_data)
        seconds = check_voice_sample(original, staging / VOICE_SAMPLE)
        original.unlink()
        return seconds

    def _fetch_analysis(self, staging: Path) -> None:
        """What the visual worker wrote into the store's staging folder (the face, the
        thumbnail, the portrait if it turned it), into the local one."""
        for name in (PORTRAIT, FACE, THUMBNAIL):
            (staging / name).unlink(missing_ok=True)
            self.layout.store.fetch(staging / name)

    def _publish(self, staging: Path, record: AvatarRecord) -> AvatarRecord:
        """Hash the files, write the record and rename the staging folder into place."""
        voice = staging / VOICE_SAMPLE
        record = record.model_copy(update={
            "portrait_sha256": sha256_file(staging / PORTRAIT),
            "voice_sha256": sha256_file(voice) if record.has_voice_sample else None})
        atomic_write_json(staging / AVATAR_RECORD, record.model_dump(mode="json"))
        self.layout.store.publish_dir(staging, self.layout.avatar_dir(record.id), AVATAR_RECORD)
        return record

    def _index(self, record: AvatarRecord) -> None:
        with self.conn.pipeline() as pipe:
            pipe.set(keys.avatar(record.id), record.model_dump_json())
            pipe.zadd(keys.AVATARS, {record.id: record.created_at})
            pipe.execute()

    def _analysis_args(self, folder: Path, face: int) -> dict[str, Any]:
        """The analysis job's arguments: the folder, and with a remote store its path under
        DATA_DIR (the worker's DATA_DIR is another disk)."""
        args: dict[str, Any] = {"avatar_dir": str(folder.resolve()), "face": face}
        if self.layout.store.remote:
            args["key"] = folder.resolve().relative_to(
                Path(self.layout.data_dir).resolve()).as_posix()
        return args

    async def _analyze(self, folder: Path, face: int) -> dict[str, Any]:
        """Face analysis by a visual worker; with a remote store the portrait goes to it
        through the store, and what the worker wrote comes back the same way."""
        store = self.layout.store
        if not store.remote:
            return await self._analysis(folder, face)
        await anyio.to_thread.run_sync(store.push, folder / PORTRAIT, limiter=self.polls)
        found = await self._analysis(folder, face)
        await anyio.to_thread.run_sync(self._fetch_analysis, folder, limiter=self.polls)
        return found

    async def _analysis(self, folder: Path, face: int) -> dict[str, Any]:
        """Face analysis by a visual worker (rq job on the avatar queue), awaited by polling
        its status from a thread a moment at a time: no thread waits for it."""

        async def run(call: partial[Any]) -> Any:
            return await anyio.to_thread.run_sync(call, limiter=self.polls)

        queue = Queue(pipeline.AVATAR_ANALYSIS.queue, connection=self.conn,
                      serializer=JSONSerializer)
        job = await run(partial(
            queue.enqueue_call, func=pipeline.AVATAR_ANALYSIS.entry_point,
            kwargs=self._analysis_args(folder, face), timeout=120,
            result_ttl=60, failure_ttl=600, ttl=int(self.settings.analyze_timeout_s) + 5))
        deadline = time.monotonic() + self.settings.analyze_timeout_s
        delay = 0.02
        while time.monotonic() < deadline:
            status = await run(partial(job.get_status, refresh=True))
            if status == JobStatus.FINISHED:
                return cast(dict[str, Any], await run(partial(job.return_value, refresh=True)))
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                raise InvalidInput("the portrait could not be analysed for a face; send a "
                                   "different photo (PNG or JPEG)", code="unreadable_portrait")
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        await run(partial(job.cancel))
        raise Busy(f"no visual worker analysed the portrait within "
                   f"{self.settings.analyze_timeout_s:.0f} s; start one with "
                   "'jayavatar-worker visual' (make run starts it) and retry",
                   code="no_visual_worker", retry_after=10)
