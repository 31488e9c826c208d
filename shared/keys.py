"""Every Redis key JayAvatar uses, in one place (the rq queues are in shared/pipeline.py)."""

from __future__ import annotations

from typing import Any

PREFIX = "ja"


def text(value: Any) -> str:
    """A Redis reply as str: connections here do not decode, so replies arrive as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


ACTIVE_JOBS = f"{PREFIX}:jobs:active"  # set of non-terminal job ids (the reconciler's work list)
ALL_JOBS = f"{PREFIX}:jobs:all"  # sorted set: job id -> created_at
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
STATUS_INDEX_READY = f"{PREFIX}:jobs:status-index"  # set once every job is in its status set
AVATARS = f"{PREFIX}:avatars"  # sorted set: avatar id -> created_at
RECONCILER_LOCK = f"{PREFIX}:reconciler:lock"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def lease(job_id: str, stage: str) -> str:
    """The lease of the one execution running `stage` of the job (stages may overlap)."""
    return f"{PREFIX}:lease:{job_id}:{stage}"


def pieces(job_id: str, stage: str) -> str:
    """Stream: one entry per piece the stage publishes (a doorbell; shared/pieces.py)."""
    return f"{PREFIX}:pieces:{job_id}:{stage}"


def short_jobs(client: str) -> str:
    """Sorted set: id -> created_at of a client's unfinished short-lane jobs (shared/lanes.py)."""
    return f"{PREFIX}:lane:short:{client}"


def jobs_with_status(status: str) -> str:
    """Sorted set: id -> created_at of the jobs with this status (kept by shared/jobs.py)."""
    return f"{PREFIX}:jobs:status:{status}"


def idempotency(key: str, scope: str | None = None) -> str:
    """An Idempotency-Key, per client scope (a hash of the API token, or "global")."""
    return f"{PREFIX}:idem:{scope or 'global'}:{key}"


def avatar(avatar_id: str) -> str:
    return f"{PREFIX}:avatar:{avatar_id}"


def events(job_id: str) -> str:
    return f"{PREFIX}:events:{job_id}"


def workers(stage: str) -> str:
    """Sorted set: live worker name -> its last beat (shared/presence.py)."""
    return f"{PREFIX}:workers:{stage}"


def rq_job_id(job_id: str, stage: str, attempt: int) -> str:
    return f"{job_id}-{stage}-{attempt}"
