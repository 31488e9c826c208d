"""/healthz: Redis reachable, LIVE workers per stage, queue depth, free space in DATA_DIR.

"ok" only when every stage has a live worker (shared/presence.py: a beat within a few seconds,
not rq's registrations, which outlive a dead worker for a day) and DATA_DIR has at least
MIN_FREE_MB free; otherwise "degraded" (still 200: the API answers), with each problem named.
503 only when Redis is unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from rq import Queue

from orchestrator.api.deps import AppState, state
from shared import keys, pipeline
from shared.disk import free_mb
from shared.presence import stage_workers

router = APIRouter(tags=["health"])


def disk_status(st: AppState) -> dict[str, Any]:
    need = st.settings.min_free_mb
    try:
        free = round(free_mb(st.settings.data_dir), 1)
    except OSError:
        free = 0.0
    return {"status": "ok" if free >= need else "low", "free_mb": free, "min_free_mb": need}


@router.get("/healthz")
def healthz(st: Annotated[AppState, Depends(state)]) -> JSONResponse:
    disk = disk_status(st)
    try:
        st.conn.ping()
        workers = stage_workers(st.conn)
        queued = {name: sum(Queue(q, connection=st.conn).count for q in s.queues)
                  for name, s in pipeline.STAGES.items()}  # every lane's
        active = st.conn.scard(keys.ACTIVE_JOBS)
    except redis.RedisError as exc:
        return JSONResponse({"status": "unavailable", "redis": f"unreachable: {exc}",
                             "disk": disk}, status_code=503)
    problems = [f"no live {stage} worker" for stage, n in workers.items() if n == 0]
    if disk["status"] == "low":
        problems.append(f"disk low: {disk['free_mb']:.0f} MB free in DATA_DIR, "
                        f"MIN_FREE_MB is {disk['min_free_mb']:.0f}; new work is refused (507)")
    return JSONResponse({"status": "degraded" if problems else "ok", "problems": problems,
                         "redis": "ok", "workers": workers, "queued": queued,
                         "active_jobs": active, "disk": disk})
