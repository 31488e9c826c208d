"""Job listings by status, and retention: what `GET /v1/jobs?status=` reads and what expires.

Each status has a sorted set (`keys.jobs_with_status`: id -> created_at) that shared/jobs.py keeps
in the same transactions as the status changes, so a listing reads only the jobs it returns.
A finished job's record expires in Redis `JOB_RETENTION_DAYS` after it ended; `prune` (run by
the reconciler) then drops its listing entries and its folder under DATA_DIR.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from typing import cast

from shared import keys
from shared.jobs import JobStore
from shared.models import TERMINAL

logger = logging.getLogger(__name__)


def prune(store: JobStore, now: float | None = None, batch: int = 500) -> int:
    """Forget finished jobs past their retention: their records have expired in Redis;
    drop their listing entries and their folders. Returns how many went."""
    if not store.retention_s:
        return 0
    horizon = (now or time.time()) - store.retention_s  # ended after created: a bound
    gone: list[str] = []
    for status in TERMINAL:
        ids = [keys.text(i) for i in store.conn.zrangebyscore(
            keys.jobs_with_status(status), "-inf", horizon, start=0, num=batch)]
        if not ids:
            continue
        with store.conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(keys.job(job_id))
            alive = pipe.execute()
        gone += [job_id for job_id, n in zip(ids, alive, strict=True) if not n]
    if not gone:
        return 0
    with store.conn.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.ALL_JOBS, *gone)
        for status in TERMINAL:
            pipe.zrem(keys.jobs_with_status(status), *gone)
        pipe.execute()
    for job_id in gone:
        shutil.rmtree(store.job_dir(job_id), ignore_errors=True)
    logger.info("retention: %d finished job(s) older than %.0f days forgotten", len(gone),
                store.retention_s / 86400)
    return len(gone)


def ensure_index(store: JobStore, batch: int = 1000) -> int:
    """Put jobs stored before the per-status listings existed into them (once)."""
    if store.conn.exists(keys.STATUS_INDEX_READY):
        return 0
    done = 0
    for start in range(0, store.conn.zcard(keys.ALL_JOBS), batch):
        entries = cast(list[tuple[bytes, float]], store.conn.zrange(
            keys.ALL_JOBS, start, start + batch - 1, withscores=True))
        with store.conn.pipeline(transaction=False) as pipe:
            for raw_id, _ in entries:
                pipe.hget(keys.job(keys.text(raw_id)), "status")
            statuses = pipe.execute()
        with store.conn.pipeline(transaction=False) as pipe:
            for (raw_id, created), status in zip(entries, statuses, strict=True):
                name = _status_of(status)
                if name is not None:
                    pipe.zadd(keys.jobs_with_status(name), {keys.text(raw_id): created})
                    done += 1
            pipe.execute()
    store.conn.set(keys.STATUS_INDEX_READY, "1")
    return done


def _status_of(raw: bytes | None) -> str | None:
    """A job hash's status field (JSON), if it is one of the known statuses."""
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if value in keys.JOB_STATUSES else None
