"""`jayavatar-worker audio|visual|compose`: one rq worker process for one stage.

Workers are rq SimpleWorkers (no fork per job) so an engine loaded once stays warm across jobs;
crash isolation comes from the supervisor and the orchestrator's reconciler, not from forking.
Each stage must run from its own venv (its `venv` in shared/pipeline.py), which holds that
engine's libraries. This is an application entry point that imports a stage's service module,
so it lives beside the services rather than in `shared/`, which names no service module.

A worker serves both lanes of its stage (shared/lanes.py), the short one first; with
`--lane short` it serves only the short lane (and avatar analysis, for the visual stage), so a
short job never waits for a long one to end (`make run` starts one such worker per stage).

Workers run only the project's entry points: an rq job is checked against its stage's
`entry_points` (its function's dotted name, no instance, callbacks or webhooks) before anything
is imported, and anything else is logged and failed without running (rq would import and call
any name).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from types import FrameType

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import DeserializationError, StopRequested
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from shared import keys, pipeline
from shared.errors import ConfigError
from shared.logs import configure_logging
from shared.presence import Presence
from shared.settings import Settings
from shared.stage import Runtime, install_runtime
from shared.storage import owner_only

logger = logging.getLogger(__name__)

REFUSED_TTL_S = 24 * 3600  # how long a refused rq job stays in rq's failed registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jayavatar-worker", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(pipeline.STAGES))
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--lane", choices=("all", pipeline.SHORT), default="all",
                        help="the lanes served: all (the short one first), or only the short "
                             "one, so that short jobs never wait for a long one to end")
    args = parser.parse_args(argv)
    lanes = pipeline.LANES if args.lane == "all" else (pipeline.SHORT,)
    spec = pipeline.STAGES[args.stage]

    try:
        settings = Settings.load()
    except ConfigError as exc:
        sys.stderr.write(f"jayavatar-worker: {exc}\n")
        return 2
    owner_only()  # what the stages write in DATA_DIR is this user's alone
    configure_logging(settings.log_level)
    # stage workers run below the orchestrator (accepting work never waits behind rendering),
    # all at one nice: Piper on every core and the drawing share the CPU as equals, so
    # overlapping stages keep both cores busy (figures in docs/overlap.md)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        sys.stderr.write(
            f"jayavatar-worker: the {args.stage} worker cannot start in this Python "
            f"({sys.prefix}): {exc}. Run it from .venvs/{spec.venv} (make setup creates it).\n")
        return 2

    runtime = Runtime.create(settings, args.stage)
    install_runtime(args.stage, runtime)
    t0 = time.monotonic()
    module.warm_up(settings)
    logger.info("worker %s: engine warm in %.2fs", runtime.worker_name, time.monotonic() - t0)

    # a client of its own: the runtime's tries a command again while Redis restarts (for the
    # stages), and a worker told to stop then must not wait on its presence beat
    presence = Presence(redis.Redis.from_url(settings.redis_url, socket_timeout=30),
                        keys.workers(args.stage), lambda: runtime.worker_name)
    presence.start()  # /healthz counts this worker while it beats
    try:
        return _work(runtime, spec.worker_queues(lanes), spec.entry_points, args.burst,
                     settings.log_level.upper())
    except KeyboardInterrupt:  # Ctrl-C while waiting for Redis to come back
        return 130
    except StopRequested:  # SIGTERM while waiting between rq loops (Redis away)
        return 0
    finally:
        presence.stop()


def refusal(job: Job, allowed: frozenset[str]) -> str | None:
    """Why this rq job must not run here, or None if it is one of our entry points. Reads only
    the job's stored fields: nothing it names is imported."""
    try:
        name, instance = job.func_name, job.instance
    except DeserializationError:
        return "its data is not what rq's JSON serializer writes"
    if not isinstance(name, str) or name not in allowed:
        return (f"function {str(name)[:120]!r} is not a JayAvatar entry point "
                f"(allowed: {', '.join(sorted(allowed))})")
    if instance is not None:
        return "it names an object instance"
    extras = [name for name in ("_success_callback_name", "_failure_callback_name",
                                "_stopped_callback_name") if getattr(job, name, None)]
    if extras or getattr(job, "webhooks", None):
        return "it carries callbacks or webhooks"
    return None


class StageWorker(SimpleWorker):
    """rq's non-forking worker, stoppable by SIGTERM/SIGINT even while Redis is unreachable
    (rq's own handler tries to record the request in Redis first and would swallow it), that
    runs only the functions in `allowed`."""

    stopping = False
    allowed: frozenset[str] = frozenset()

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = refusal(job, self.allowed)
        if reason is None:
            super().execute_job(job, queue)
            return
        logger.error("worker %s: refused rq job %s from queue %s: %s", self.name, job.id,
                     queue.name, reason)
        why = f"refused by JayAvatar: {reason}"
        with self.connection.pipeline() as pipe:  # failed, with no retry, callback or webhook
            pipe.lrem(queue.intermediate_queue_key, 0, job.id)
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            queue.failed_job_registry.add(job, ttl=REFUSED_TTL_S, pipeline=pipe, exc_string=why)
            Result.create_failure(job, REFUSED_TTL_S, exc_string=why, worker_name=self.name,
                                  pipeline=pipe)
            pipe.execute()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        try:
            super().request_stop(signum, frame)  # type: ignore[no-untyped-call]
        except redis.exceptions.ConnectionError:
            raise StopRequested() from None


def rq_connection(settings: Settings) -> redis.Redis:
    """rq's own client. rq waits for work in a BLPOP of up to its dequeue timeout (worker_ttl
    - 15 s, 405 s) and raises the pool's socket timeout above that, but a connection the pool
    already holds keeps the one it was made with: on the runtime's client (30 s, for stage code
    and the presence beat, which connect first) an idle worker's BLPOP timed out after 30 s and
    rq quit. A client of its own has no connection before rq sets its timeout."""
    return redis.Redis.from_url(settings.redis_url, health_check_interval=10)


def _work(runtime: Runtime, queues: tuple[str, ...], allowed: frozenset[str], burst: bool,
          log_level: str) -> int:
    """Run the rq worker on `queues`, in that order; while Redis is unreachable, wait and
    start it again."""
    delay = 0.5
    conn = rq_connection(runtime.settings)
    while True:
        worker = None
        try:
            worker = StageWorker(list(queues), connection=conn,
                                 serializer=JSONSerializer, name=runtime.worker_name)
            worker.allowed = allowed
            worker.work(burst=burst, with_scheduler=False, logging_level=log_level)
            if burst or worker.stopping or worker._stop_requested:
                return 0
            # rq leaves its loop on a Redis timeout ("quitting"): a worker keeps serving
            logger.warning("worker %s: rq's loop ended without a stop request; starting it again",
                           runtime.worker_name)
        except redis.exceptions.BusyLoadingError:
            logger.warning("worker %s: Redis is loading its data; retrying", runtime.worker_name)
        except redis.exceptions.AuthenticationError as exc:  # no retry can fix the settings
            sys.stderr.write(
                f"jayavatar-worker: Redis at {runtime.settings.redis_url_redacted} refused "
                f"REDIS_URL's credentials ({exc}); give the app user's password in it: "
                "redis://jayavatar:<password>@host:port/db (python3 scripts/redis_auth.py url "
                "prints it)\n")
            return 2
        except redis.exceptions.ConnectionError as exc:  # Redis restarting: wait, then resume
            logger.warning("worker %s: Redis unavailable (%s); retrying in %.1fs",
                           runtime.worker_name, exc, delay)
        if worker is not None and worker.stopping:
            return 0  # asked to stop while Redis was away
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
        runtime.worker_name = f"{runtime.worker_name.rsplit('.', 1)[0]}.{int(time.time() * 1000)}"


if __name__ == "__main__":
    sys.exit(main())
