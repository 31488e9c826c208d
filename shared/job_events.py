"""A job's event stream (`keys.events`), which GET /v1/jobs/{id}/events reads.

A state event is written in the transaction of every change of the job (shared/transitions.py),
progress events as a stage reports them; the stream is bounded, and expires a while after the
job ends.
"""

from __future__ import annotations

import redis
from redis.typing import EncodableT, FieldT

from shared import keys
from shared.models import JobRecord

EVENTS_MAXLEN = 500  # per-job event stream
EVENTS_TTL_S = 24 * 3600  # kept this long after the job ends


def add_state(pipe: redis.client.Pipeline, rec: JobRecord) -> None:
    """A state-change event, queued on the pipeline of the change's transaction."""
    _add(pipe, rec.id, {
        "type": "state", "status": rec.status, "stage": rec.stage,
        "stage_state": rec.stage_state, "attempt": str(rec.attempt),
        "progress": f"{rec.progress():.4f}", "error": rec.error or "",
    })


def add_progress(pipe: redis.client.Pipeline, job_id: str, stage: str, value: str) -> None:
    """A progress event of a running stage (`value` formatted as the job hash stores it)."""
    _add(pipe, job_id, {"type": "progress", "stage": stage, "value": value})


def expire_after_end(pipe: redis.client.Pipeline, job_id: str) -> None:
    """Let the stream of an ended job go EVENTS_TTL_S from now."""
    pipe.expire(keys.events(job_id), EVENTS_TTL_S)


def _add(pipe: redis.client.Pipeline, job_id: str, fields: dict[FieldT, EncodableT]) -> None:
    pipe.xadd(keys.events(job_id), fields, maxlen=EVENTS_MAXLEN, approximate=True)
