"""GET /v1/jobs/{id}/events: a job's state changes and progress as server-sent events.

The stream is the job's Redis stream (`keys.events`), written by `JobStore` in the same
transaction as each change. A client first gets a `snapshot` event (the JobPublic record), then
every `state` and `progress` entry after it, each with `id:` set to the Redis entry id, so a
reconnecting EventSource resumes with `Last-Event-ID` and misses nothing. The stream ends after a
terminal state event (succeeded, failed, canceled).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import anyio
import redis
import redis.asyncio as aredis
from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse

from orchestrator.api.deps import AppState, StreamCount, state
from orchestrator.schemas import JobPublic
from shared import keys, pipeline
from shared.errors import Busy, Malformed, NotFound
from shared.models import TERMINAL, JobRecord

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

BLOCK_MS = 1000  # one XREAD waits this long, so a gone client is noticed within a second
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and clients from timing out
RECHECK_S = 5.0  # while idle, look at the record this often (covers a trimmed or expired stream)
RETRY_MS = 2000  # how long an EventSource waits before reconnecting
RETRY_AFTER_S = 5  # what a refused stream (past MAX_EVENT_STREAMS) is told
_ENTRY_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")


def overall_progress(stage: str, value: float) -> float:
    """The whole job's progress while `stage` is at `value` (earlier stages are done)."""
    done = 0.0
    for name, spec in pipeline.STAGES.items():
        if name == stage:
            return round(min(done + spec.weight * value, 0.999), 4)
        done += spec.weight
    return 0.0


def entry_payload(fields: dict[Any, Any]) -> dict[str, Any]:
    """A stream entry as the JSON the client gets, with overall progress in every event."""
    raw = {keys.text(k): keys.text(v) for k, v in fields.items()}
    if raw.get("type") == "progress":
        value = float(raw.get("value", 0.0))
        return {"type": "progress", "stage": raw.get("stage", ""), "value": value,
                "progress": overall_progress(raw.get("stage", ""), value)}
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


async def _follow(conn: aredis.Redis, rec: JobRecord, cursor: str, resumed: bool,
                  count: StreamCount) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        yield sse("snapshot", JobPublic.of(rec).model_dump(mode="json"))
        if rec.terminal and not resumed:
            return
        # A resumed stream may replay older stages first; their state entries set the stage.
        async for chunk in _tail(conn, rec, cursor, None if resumed else rec.stage):
            yield chunk
    finally:
        count.open -= 1
        with anyio.CancelScope(shield=True):
            await conn.aclose()


async def _tail(conn: aredis.Redis, rec: JobRecord, cursor: str,
                stage: str | None) -> AsyncIterator[str]:
    """Stream entries after `cursor` until a terminal state, with heartbeats while idle."""
    key, recheck = keys.events(rec.id), rec.terminal
    last_write = last_check = time.monotonic()
    while True:
        # [(stream, [(entry id, fields), ...])]: one stream asked for, the RESP2 reply shape
        found = cast(list[Any], await conn.xread({key: cursor}, count=100, block=BLOCK_MS))
        now = time.monotonic()
        for entry_id, fields in (entry for _, entries in found for entry in entries):
            cursor, data = keys.text(entry_id), entry_payload(fields)
            if data["type"] == "progress" and stage not in (None, data["stage"]):
                continue  # a late write from a stage the job has already left
            stage, last_write = data["stage"], now
            yield sse(data["type"], data, cursor)
            if data["type"] == "state" and data["status"] in TERMINAL:
                return
        if found:
            continue
        if recheck or now - last_check >= RECHECK_S:
            recheck, last_check = False, now
            current, _ = await _snapshot(conn, rec.id)
            if current is None or current.terminal:
                # Its terminal entry was trimmed away or the stream expired: say how it ended.
                if current is not None:
                    yield sse("state", _state_of(current))
                return
        if now - last_write >= HEARTBEAT_S:
            yield ": heartbeat\n\n"
            last_write = now


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
    if last_event_id is not None and not _ENTRY_ID.match(last_event_id.strip()):
        raise Malformed(f"Last-Event-ID {last_event_id[:40]!r} is not an event id; expected the "
                        "'id' of an event from this stream, like '1712345678901-0'",
                        code="bad_last_event_id")
    count = st.event_streams
    limit = st.settings.max_event_streams
    if count.open >= limit:
        logger.warning("event stream for job %s refused: %d open (MAX_EVENT_STREAMS)", job_id,
                       count.open)
        raise Busy(f"this server already follows {count.open} event streams (its limit is "
                   f"{limit}); retry in a few seconds, or poll GET /v1/jobs/{job_id}",
                   code="too_many_streams", retry_after=RETRY_AFTER_S)
    conn = aredis.Redis.from_url(st.settings.redis_url, health_check_interval=10,
                                 client_name="jayavatar-events")
    try:
        rec, newest = await _snapshot(conn, job_id)
    except redis.RedisError:  # answered as 503 by the app's handler
        await conn.aclose()
        raise
    if rec is None:
        await conn.aclose()
        raise NotFound(f"no job with id {job_id!r}", code="job_not_found")
    count.open += 1  # given back when the stream ends (_follow)
    resumed = last_event_id is not None
    cursor = last_event_id.strip() if last_event_id is not None else newest
    logger.info("job %s: event stream opened from %s", job_id, cursor)
    return StreamingResponse(_follow(conn, rec, cursor, resumed, count),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
