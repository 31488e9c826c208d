"""GET /v1/jobs/{id}/stream: watch a job while it renders, as one progressive fragmented MP4.

The compose stage publishes its output in pieces (shared/pieces.py, docs/overlap.md):
`jobs/<id>/compose.pieces/init.mp4` (ftyp+moov), then `seg_<n>.m4s` (moof+mdat), each renamed
into place before its `seg_<n>.json` meta, and `end.json` (`{"segments": N}`) after the last.
Init plus every segment in order is one playable fMP4 (H.264 + AAC-LC), so the response is those
files sent as they appear: ffplay, mpv, VLC and the page's Media Source player start on its first
bytes. A job that publishes no segments (compose options that need the whole input) streams its
result.mp4 once it has succeeded.

The status line waits for the first segment (or the result), so a job that fails or is canceled
before it answers 409 with its error rather than an empty 200. Each watcher is one task that
looks for its next file every POLL_S, and reads the job's status (one HMGET) at most every
STATUS_EVERY_S while nothing new appears: no thread and no Redis connection of its own. A client
that goes away ends its task; one that sees nothing new for IDLE_LIMIT_S has its stream ended.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import redis
import redis.asyncio as aredis
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from orchestrator.api.deps import AppState, state
from orchestrator.api.errors import ApiError, status_of
from shared import keys
from shared.errors import Busy, Conflict, JayAvatarError, NotFound
from shared.layout import Layout
from shared.models import TERMINAL
from shared.pieces import PieceFiles
from shared.pipeline import RESULT
from shared.store import Store, StoreUnavailable

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_S = 0.075  # how often a watcher looks for its next file
STATUS_EVERY_S = 0.5  # how often it reads the job's status while nothing new appears
IDLE_LIMIT_S = 600.0  # a stream with nothing new for this long ends (before its first byte: 503)
RESULT_CHUNK = 256 * 1024
RETRY_AFTER_S = 5
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
STAGE = "compose"


@dataclass(frozen=True)
class JobState:
    """The few fields of a job record a watcher needs, read with one HMGET."""

    status: str
    stage: str
    error: str | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _field(raw: Any) -> str | None:
    """A record field as stored (JSON text, `JobRecord.to_hash`) back as a string."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:  # a damaged record: show what is there
        return keys.text(raw)
    return value if isinstance(value, str) else None


async def job_state(conn: aredis.Redis, job_id: str) -> JobState | None:
    """The job's status, stage and error; None if there is no such job."""
    status, stage, error = await conn.hmget(keys.job(job_id), ["status", "stage", "error"])
    if status is None:
        return None
    return JobState(_field(status) or "queued", _field(stage) or STAGE, _field(error))


@dataclass(frozen=True)
class WatchFiles:
    """One job's watch stream on disk: its compose pieces (shared/pieces.py) and its result."""

    segments: PieceFiles
    result: Path

    @classmethod
    def of(cls, layout: Layout, job_id: str) -> WatchFiles:
        return cls(PieceFiles.of(layout, job_id, STAGE), layout.stage_dir(job_id, STAGE) / RESULT)


class Refused(Exception):
    """The answer a stream gives instead of video, decided before its first byte: a domain
    refusal (Conflict, Busy) or a status only HTTP knows (410)."""

    def __init__(self, error: JayAvatarError | ApiError) -> None:
        super().__init__(error.message)
        self.error = error

    def response(self) -> JSONResponse:
        error = self.error
        status = error.status if isinstance(error, ApiError) else status_of(error) or 409
        headers = ({"Retry-After": str(error.retry_after)}
                   if isinstance(error, Busy) and error.retry_after is not None else None)
        return JSONResponse({"error": error.code, "message": error.message},
                            status_code=status, headers=headers)


def _not_watchable(job_id: str, job: JobState) -> Refused:
    reason = f": {job.error}" if job.error else ""
    return Refused(Conflict(
        f"job {job_id} {job.status} during {job.stage} before it had any video to watch"
        f"{reason}. Nothing was made; see GET /v1/jobs/{job_id} and submit it again.",
        code="nothing_to_watch"))


class JobStream(Response):
    """The watch stream of one job: waits for its first segment (or result) before the status
    line, then sends bytes as files appear. Ends, and frees its task, as soon as the client
    goes (Starlette's StreamingResponse would not notice while nothing is sent)."""

    media_type = "video/mp4"

    def __init__(self, job_id: str, job: JobState, files: WatchFiles,
                 conn: aredis.Redis) -> None:
        self.status_code, self.background = 200, None
        self.init_headers(HEADERS)  # no body, so no Content-Length: chunked
        self.job_id, self.job, self.files, self.conn = job_id, job, files, conn
        self.segments = files.segments
        self.sent, self.answered = 0, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, gone = time.monotonic(), False
        async with anyio.create_task_group() as group:
            async def serve() -> None:
                try:
                    await self._serve(scope, receive, send)
                except OSError:  # the client's socket broke mid-send
                    pass
                group.cancel_scope.cancel()

            group.start_soon(serve)
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = not self.answered  # (the server reports a disconnect after any response)
            group.cancel_scope.cancel()
        logger.info("job %s: watch stream %s after %.1f s, %d bytes", self.job_id,
                    "left by its client" if gone else "ended", time.monotonic() - started,
                    self.sent)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first = await self._first()
        except Refused as refused:
            self.answered = True
            await refused.response()(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        body = self._file(self.files.result) if first == "result" else self._segments()
        async with aclosing(body):
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sent += len(chunk)
        self.answered = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _at(self, call: Callable[..., _T], *args: Any) -> _T | None:
        return await _look(self.segments.store, call, *args)

    async def _status(self) -> JobState:
        """The job's state now; the last one known while Redis is away (the stream waits)."""
        try:
            job = await job_state(self.conn, self.job_id)
        except redis.RedisError as exc:
            logger.info("job %s: watch stream cannot read the job's status: %s", self.job_id, exc)
            return self.job
        if job is None:  # expired and deleted meanwhile
            job = JobState("canceled", self.job.stage, "the job's record is gone")
        self.job = job
        return job

    async def _first(self) -> str:
        """What the stream will send: "segments" once segment 0 is published, "result" for a
        job that succeeded without segments; Refused if there will be nothing to send."""
        job, deadline = self.job, time.monotonic() + IDLE_LIMIT_S
        next_look = time.monotonic() + STATUS_EVERY_S
        while True:
            if await self._at(self.segments.published, 0):
                return "segments"
            if job.terminal:
                if await self._at(self.segments.published, 0):  # published before the job ended
                    return "segments"
                if job.status != "succeeded":
                    raise _not_watchable(self.job_id, job)
                if await self._at(self.segments.store.fetch, self.files.result) is None:
                    raise Refused(ApiError(410, "result_missing", f"job {self.job_id} "
                                           "succeeded but its result is no longer on disk"))
                return "result"
            now = time.monotonic()
            if now >= deadline:
                raise Refused(Busy(
                    f"job {self.job_id} is still {job.status} at {job.stage} and has had "
                    f"nothing to watch for {IDLE_LIMIT_S:g} s; open the stream again, or "
                    f"follow GET /v1/jobs/{self.job_id}/events", code="nothing_yet",
                    retry_after=RETRY_AFTER_S))
            if now >= next_look:
                job, next_look = await self._status(), now + STATUS_EVERY_S
            else:
                await anyio.sleep(POLL_S)

    async def _segments(self) -> AsyncGenerator[bytes, None]:
        """init.mp4, then each segment once published, until end.json's last one, or until the
        job has ended and no next segment followed, or IDLE_LIMIT_S without a new one."""
        init = await self._at(self.segments.init_bytes)
        if init is None:
            logger.warning("job %s: watch stream has no %s", self.job_id,
                           self.segments.watch_init.name)
            return
        yield init
        n, job = 0, self.job
        last_new = next_look = time.monotonic()
        while True:
            end = await self._at(self.segments.end)
            if end is not None and n >= end:
                return
            if await self._at(self.segments.published, n):
                try:
                    yield await anyio.to_thread.run_sync(self.segments.read_bytes, n)
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning("job %s: watch stream stops at segment %d: %s",
                                   self.job_id, n, exc)
                    return
                n, last_new = n + 1, time.monotonic()
                continue
            if job.terminal:  # ended, and the last look after that found no next segment
                return
            now = time.monotonic()
            if now - last_new >= IDLE_LIMIT_S:
                logger.warning("job %s: watch stream ends: no segment %d for %g s", self.job_id,
                               n, IDLE_LIMIT_S)
                return
            if now >= next_look:
                job, next_look = await self._status(), now + STATUS_EVERY_S
                if job.terminal:
                    continue  # one more look: segments published before it ended
            await anyio.sleep(POLL_S)

    async def _file(self, path: Path) -> AsyncGenerator[bytes, None]:
        """A whole file in chunks, each read in the thread pool (the result may be large)."""
        handle = await anyio.open_file(path, "rb")
        try:
            while chunk := await handle.read(RESULT_CHUNK):
                yield chunk
        finally:
            await handle.aclose()


async def _look(store: Store, call: Callable[..., _T], *args: Any) -> _T | None:
    """`call(*args)`: at once on the local disk, in the thread pool for a remote store (a
    waiting watcher holds no thread); None while the store is out of reach: the stream
    waits, as for a file not there yet."""
    if not store.remote:
        return call(*args)
    try:
        return await anyio.to_thread.run_sync(call, *args)
    except StoreUnavailable as exc:
        logger.info("watch stream: %s", exc)
        return None


# status_code given: /openapi.json cannot find it in JobStream's __init__, and would fail
@router.get("/{job_id}/stream", response_class=JobStream, status_code=200,
            responses={200: {"content": {"video/mp4": {}},
                             "description": "a progressive fragmented MP4 (chunked)"},
                       404: {"description": "no such job"},
                       409: {"description": "the job ended before it had video to watch"},
                       503: {"description": "nothing to watch for IDLE_LIMIT_S; retry"}})
async def job_stream(job_id: str, st: Annotated[AppState, Depends(state)]) -> JobStream:
    """The job's video while it renders: init and segments as compose publishes them."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", job_id):
        raise NotFound(f"no job with id {job_id[:64]!r}", code="job_not_found")
    job = await job_state(st.events.conn, job_id)  # a RedisError: 503 by the app's handler
    if job is None:
        raise NotFound(f"no job with id {job_id!r}", code="job_not_found")
    files = WatchFiles.of(st.settings.layout, job_id)
    segments = files.segments
    if job.terminal and job.status != "succeeded" and not await _look(
            segments.store, segments.published, 0):
        raise _not_watchable(job_id, job).error
    logger.info("job %s: watch stream opened (%s at %s)", job_id, job.status, job.stage)
    return JobStream(job_id, job, files, st.events.conn)
