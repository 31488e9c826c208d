"""GET /v1/jobs/{id}/events: a job's state changes and progress as server-sent events.

The stream is the job's Redis stream (`keys.events`), written by `JobStore` in the same
transaction as each change. A client first gets a `snapshot` event (the JobPublic record), then
every `state` and `progress` entry after it, each with `id:` set to the Redis entry id, so a
reconnecting EventSource resumes with `Last-Event-ID` and misses nothing. The stream ends after a
terminal state event (succeeded, failed, canceled).

The streams of one API process share its EventHub (orchestrator/event_hub.py): one Redis
connection reads every followed job's stream, and a few more read records, however many clients
follow; MAX_EVENT_STREAMS still bounds the clients (each is a task and a socket).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import redis
import redis.asyncio as aredis
from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from orchestrator.api.deps import AppState, state
from orchestrator.event_hub import Entry, EventHub, Follower, stream_id
from orchestrator.schemas import JobPublic
from shared import keys, pipeline
from shared.errors import Busy, Malformed, NotFound
from shared.models import TERMINAL, JobRecord

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and clients from timing out
RECHECK_S = 5.0  # while idle, look at the record this often (covers a trimmed or expired stream)
RETRY_MS = 2000  # how long an EventSource waits before reconnecting
RETRY_AFTER_S = 5  # what a refused stream (past MAX_EVENT_STREAMS) is told
_ENTRY_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")


def _is_entry_id(text: str) -> bool:
    """An id Redis would take ("1712345678901-0", or its first part alone)."""
    if not _ENTRY_ID.match(text.strip()):
        return False
    try:
        stream_id(text)
    except ValueError:  # a part past 2**64 - 1
        return False
    return True


def entry_payload(fields: dict[Any, Any]) -> dict[str, Any]:
    """A stream entry as the JSON the client gets; `_render` puts the overall progress of
    the job into a progress entry (it needs what the stream has shown before it)."""
    raw = {keys.text(k): keys.text(v) for k, v in fields.items()}
    if raw.get("type") == "progress":
        return {"type": "progress", "stage": raw.get("stage", ""),
                "value": float(raw.get("value", 0.0))}
    return {"type": "state", "status": raw.get("status", ""), "stage": raw.get("stage", ""),
            "stage_state": raw.get("stage_state", ""), "attempt": int(raw.get("attempt") or 1),
            "progress": float(raw.get("progress") or 0.0), "error": raw.get("error") or None}


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _snapshot(conn: aredis.Redis, job_id: str) -> tuple[JobRecord | None, str]:
    """The record and the id of the newest stream entry, read atomically (no gap, no repeat)."""
    async with conn.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.job(job_id))
        pipe.xrevrange(keys.events(job_id), count=1)
        raw, newest = await pipe.execute()
    if not raw:
        return None, "0-0"
    try:
        rec = JobRecord.from_hash(raw)
    except (ValueError, TypeError, AttributeError) as exc:  # shown as GET /v1/jobs/{id} shows it
        rec = JobRecord.damaged(job_id, raw, exc)
    return rec, keys.text(newest[0][0]) if newest else "0-0"


async def _follow(hub: EventHub, follower: Follower | None, rec: JobRecord,
                  resumed: bool) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    yield sse("snapshot", JobPublic.of(rec).model_dump(mode="json"))
    if follower is None:  # a finished job, not resumed: its snapshot says it all
        return
    # A resumed stream may replay older stages first; their state entries set the stage.
    async for chunk in _tail(hub, follower, rec, None if resumed else rec.stage):
        yield chunk


async def _tail(hub: EventHub, follower: Follower, rec: JobRecord,
                stage: str | None) -> AsyncIterator[str]:
    """Stream entries after the follower's id until a terminal state, with heartbeats while
    idle; ends early if the hub cuts the follower off (the client resumes by Last-Event-ID)."""
    # A record seen finished, and the hub's reads by then: once the hub has read the stream to
    # its end after that without a terminal entry (trimmed away, or the stream expired), the
    # record says how the job ended.
    finished, seen = (rec if rec.terminal else None), 0
    progress = _Progress(stage)
    last_write = last_check = time.monotonic()
    while True:
        due = min(last_write + HEARTBEAT_S, last_check + RECHECK_S)
        entries = await follower.next(due - time.monotonic(), read=finished is not None)
        if follower.cut:
            return
        now = time.monotonic()
        chunks, ended = _render(entries, progress)
        if chunks:
            yield "".join(chunks)
            last_write = now
        if ended:
            return
        if finished is not None:
            if follower.reads > seen:
                yield sse("state", _state_of(finished))
                return
        elif not entries and now - last_check >= RECHECK_S:
            last_check = now
            gone, finished = await _recheck(hub.conn, rec.id)
            if gone:
                return
            seen = follower.reads
        if now - last_write >= HEARTBEAT_S:
            yield ": heartbeat\n\n"
            last_write = now


@dataclass
class _Progress:
    """What a stream has shown: the job's stage and each stage's progress. Stages overlap (a
    stage starts on its upstream's first piece), so a progress entry may come from a stage
    after the job's current one; the overall figure is every stage's share, and never goes
    back."""

    stage: str | None
    values: dict[str, float] = field(default_factory=dict)
    shown: float = 0.0

    def late(self, stage: str) -> bool:
        """Whether `stage` is one the job has already left (a late write)."""
        order = list(pipeline.STAGES)
        return (self.stage in order and stage in order
                and order.index(stage) < order.index(self.stage))

    def overall(self) -> float:
        order = list(pipeline.STAGES)
        current = order.index(self.stage) if self.stage in order else 0
        total = sum(spec.weight * (1.0 if i < current else self.values.get(name, 0.0))
                    for i, (name, spec) in enumerate(pipeline.STAGES.items()))
        return self.seen(round(min(total, 0.999), 4))

    def seen(self, value: float) -> float:
        self.shown = max(self.shown, value)
        return self.shown


def _render(entries: list[Entry], progress: _Progress) -> tuple[list[str], bool]:
    """The events for these entries, and whether they reached a terminal state (the stream
    ends there)."""
    chunks = []
    for cursor, fields in entries:
        data = entry_payload(fields)
        if data["type"] == "progress":
            if progress.late(data["stage"]):
                continue  # a late write from a stage the job has already left
            progress.values[data["stage"]] = data["value"]
            data["progress"] = progress.overall()
        else:
            progress.stage = data["stage"]
            data["progress"] = 1.0 if data["status"] == "succeeded" else \
                progress.seen(min(data["progress"], 0.999))
        chunks.append(sse(data["type"], data, cursor))
        if data["type"] == "state" and data["status"] in TERMINAL:
            return chunks, True
    return chunks, False


async def _recheck(conn: aredis.Redis, job_id: str) -> tuple[bool, JobRecord | None]:
    """Whether the job's record is gone (expired), and the record if the job has finished.
    While Redis is away, neither: the stream waits, as the hub does."""
    try:
        current, _ = await _snapshot(conn, job_id)
    except redis.RedisError as exc:
        logger.info("job %s: event stream cannot recheck the record: %s", job_id, exc)
        return False, None
    if current is None:
        return True, None
    return False, current if current.terminal else None


def _state_of(rec: JobRecord) -> dict[str, Any]:
    return {"type": "state", "status": rec.status, "stage": rec.stage,
            "stage_state": rec.stage_state, "attempt": rec.attempt,
            "progress": rec.progress(), "error": rec.error}


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, st: Annotated[AppState, Depends(state)],
                     last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    if not re.fullmatch(r"[0-9a-f]{1,64}", job_id):
        raise NotFound(f"no job with id {job_id[:64]!r}", code="job_not_found")
    if last_event_id is not None and not _is_entry_id(last_event_id):
        raise Malformed(f"Last-Event-ID {last_event_id[:40]!r} is not an event id; expected the "
                        "'id' of an event from this stream, like '1712345678901-0'",
                        code="bad_last_event_id")
    hub, limit = st.events, st.settings.max_event_streams
    # the place is taken before the first await: concurrent requests cannot overshoot the cap
    place = hub.reserve(keys.events(job_id), limit)
    if place is None:
        logger.warning("event stream for job %s refused: %d open (MAX_EVENT_STREAMS)", job_id,
                       hub.open)
        raise Busy(f"this server already follows {hub.open} event streams (its limit is "
                   f"{limit}); retry in a few seconds, or poll GET /v1/jobs/{job_id}",
                   code="too_many_streams", retry_after=RETRY_AFTER_S)
    follower: Follower | None = None
    try:
        rec, newest = await _snapshot(hub.conn, job_id)  # a RedisError: 503 by the app's handler
        if rec is None:
            raise NotFound(f"no job with id {job_id!r}", code="job_not_found")
        resumed = last_event_id is not None
        cursor = last_event_id.strip() if last_event_id is not None else newest
        if not rec.terminal or resumed:  # else its snapshot says it all: nothing to follow
            hub.join(place, cursor)
            follower = place
    finally:
        if follower is None:  # no such job, Redis away, the client gone, or nothing to follow
            hub.leave(place)
    logger.info("job %s: event stream opened from %s", job_id, cursor)

    def close() -> None:
        if follower is not None:
            hub.leave(follower)

    return EventStream(_follow(hub, follower, rec, resumed), on_close=close)


class EventStream(StreamingResponse):
    """An event stream that gives its follower's place back however it ends: its client gone
    (Starlette cancels the stream), its job over, or the response never started."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
