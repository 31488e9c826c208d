"""GET /metrics: the cluster in Prometheus text format (exposition 0.0.4, written by hand).

Everything is read from Redis at scrape time, so every orchestrator answers the same and nothing
is lost on restart: job counts by status, queue depth and live workers per stage (by their beats,
shared/presence.py), free space in DATA_DIR, and from the job records, stage durations (the last
attempt's started_at -> finished_at), retries and failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args

import redis
from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from rq import Queue

from orchestrator.api.deps import AppState, state
from shared import keys, pipeline
from shared.disk import free_mb
from shared.models import JobStatus
from shared.presence import stage_workers

router = APIRouter(tags=["metrics"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES: tuple[str, ...] = get_args(JobStatus)
BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_BATCH = 500


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1


@dataclass
class JobTally:
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    durations: dict[str, Histogram] = field(
        default_factory=lambda: {s: Histogram() for s in pipeline.STAGES})
    retries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(pipeline.STAGES, 0))
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(pipeline.STAGES, 0))

    def add(self, status: str, stages: dict[str, dict[str, Any]]) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        for stage, info in stages.items():
            if stage not in self.retries:
                continue
            self.retries[stage] += max(int(info.get("attempts") or 0) - 1, 0)
            if info.get("status") == "failed":
                self.failures[stage] += 1
            started, finished = info.get("started_at"), info.get("finished_at")
            if info.get("status") == "done" and started and finished and finished >= started:
                self.durations[stage].observe(finished - started)


def tally_jobs(conn: redis.Redis) -> JobTally:
    """Read status and stages of every job record, in pipelined batches."""
    tally = JobTally()
    ids = [keys.text(i) for i in conn.zrange(keys.ALL_JOBS, 0, -1)]
    for start in range(0, len(ids), _BATCH):
        with conn.pipeline(transaction=False) as pipe:
            for job_id in ids[start:start + _BATCH]:
                pipe.hmget(keys.job(job_id), "status", "stages")
            rows = pipe.execute()
        for status, stages in rows:
            if status is None:
                continue
            try:
                tally.add(json.loads(status), json.loads(stages) if stages else {})
            except (ValueError, TypeError, AttributeError):
                continue  # a damaged record (GET /v1/jobs shows it as such) is not counted
    return tally


def _fmt(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _family(name: str, kind: str, doc: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_fmt(value)}" for labels, value in samples]
    return lines


def render(tally: JobTally, depth: dict[str, int], workers: dict[str, int],
           free_bytes: float | None = None) -> str:
    out: list[str] = []
    out += _family("jayavatar_jobs", "gauge", "Jobs by status.",
                   ((f'{{status="{s}"}}', n) for s, n in tally.by_status.items()))
    out += _family("jayavatar_queue_depth", "gauge", "Executions waiting in each stage's queue.",
                   ((f'{{stage="{s}"}}', n) for s, n in depth.items()))
    out += _family("jayavatar_workers", "gauge",
                   "Live workers serving each stage's queue (a beat within the last few seconds).",
                   ((f'{{stage="{s}"}}', n) for s, n in workers.items()))
    if free_bytes is not None:
        out += _family("jayavatar_data_free_bytes", "gauge",
                       "Free space on the DATA_DIR filesystem; below MIN_FREE_MB new work is "
                       "refused.", [("", int(free_bytes))])
    out += _family("jayavatar_stage_retries_total", "counter",
                   "Stage executions beyond the first (attempt > 1), summed over jobs.",
                   ((f'{{stage="{s}"}}', n) for s, n in tally.retries.items()))
    out += _family("jayavatar_stage_failures_total", "counter",
                   "Stages that failed for good (their job failed there).",
                   ((f'{{stage="{s}"}}', n) for s, n in tally.failures.items()))
    name = "jayavatar_stage_duration_seconds"
    out += [f"# HELP {name} Wall time of each finished stage's last attempt.",
            f"# TYPE {name} histogram"]
    for stage, hist in tally.durations.items():
        for bound, count in zip(BUCKETS, hist.counts, strict=True):
            out.append(f'{name}_bucket{{stage="{stage}",le="{bound}"}} {count}')
        out.append(f'{name}_bucket{{stage="{stage}",le="+Inf"}} {hist.n}')
        out.append(f'{name}_sum{{stage="{stage}"}} {_fmt(round(hist.total, 6))}')
        out.append(f'{name}_count{{stage="{stage}"}} {hist.n}')
    return "\n".join(out) + "\n"


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(st: Annotated[AppState, Depends(state)]) -> PlainTextResponse:
    depth = {name: sum(Queue(q, connection=st.conn).count for q in s.queues)  # every lane's
             for name, s in pipeline.STAGES.items()}
    workers = stage_workers(st.conn)
    try:
        free: float | None = free_mb(st.settings.data_dir) * 1024 * 1024
    except OSError:
        free = None
    body = render(tally_jobs(st.conn), depth, workers, free)
    return PlainTextResponse(body, media_type=CONTENT_TYPE)
