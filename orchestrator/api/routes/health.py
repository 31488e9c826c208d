"""/healthz: is Redis reachable, and how many workers serve each stage."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from rq import Queue, Worker

from orchestrator.api.deps import AppState, state
from shared import keys

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(st: Annotated[AppState, Depends(state)]) -> JSONResponse:
    try:
        st.conn.ping()
        workers = {stage: Worker.count(queue=Queue(q, connection=st.conn))
                   for stage, q in keys.QUEUES.items()}
        queued = {stage: Queue(q, connection=st.conn).count for stage, q in keys.QUEUES.items()}
        active = st.conn.scard(keys.ACTIVE_JOBS)
    except redis.RedisError as exc:
        return JSONResponse({"status": "unavailable", "redis": f"unreachable: {exc}"},
                            status_code=503)
    return JSONResponse({"status": "ok", "redis": "ok", "workers": workers, "queued": queued,
                         "active_jobs": active})
