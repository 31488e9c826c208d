"""`jayavatar-worker audio|visual|compose`: one rq worker process for one stage.

Workers are rq SimpleWorkers (no fork per job) so an engine loaded once stays warm across jobs;
crash isolation comes from the supervisor and the orchestrator's reconciler, not from forking.
Each stage must run from its own venv (.venvs/<stage>), which holds that engine's libraries.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from types import FrameType

import redis
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from shared import keys
from shared.errors import ConfigError
from shared.logs import configure_logging
from shared.settings import Settings
from shared.stage import Runtime, install_runtime

logger = logging.getLogger(__name__)

MODULES = {
    "audio": "services.audio.worker",
    "visual": "services.visual.worker",
    "compose": "services.compositor.worker",
}
QUEUES = {
    "audio": [keys.QUEUES["audio"]],
    "visual": [keys.AVATAR_QUEUE, keys.QUEUES["visual"]],
    "compose": [keys.QUEUES["compose"]],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jayavatar-worker", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(MODULES))
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    args = parser.parse_args(argv)

    try:
        settings = Settings.load()
    except ConfigError as exc:
        sys.stderr.write(f"jayavatar-worker: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    try:
        module = importlib.import_module(MODULES[args.stage])
    except ImportError as exc:
        sys.stderr.write(
            f"jayavatar-worker: the {args.stage} worker cannot start in this Python "
            f"({sys.prefix}): {exc}. Run it from .venvs/{args.stage} (make setup creates it).\n")
        return 2

    runtime = Runtime.create(settings, args.stage)
    install_runtime(args.stage, runtime)
    t0 = time.monotonic()
    module.warm_up(settings)
    logger.info("worker %s: engine warm in %.2fs", runtime.worker_name, time.monotonic() - t0)

    try:
        return _work(runtime, args.stage, args.burst, settings.log_level.upper())
    except KeyboardInterrupt:  # Ctrl-C while waiting for Redis to come back
        return 130


class StageWorker(SimpleWorker):
    """rq's non-forking worker, stoppable by SIGTERM/SIGINT even while Redis is unreachable
    (rq's own handler tries to record the request in Redis first and would swallow it)."""

    stopping = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        try:
            super().request_stop(signum, frame)
        except redis.exceptions.ConnectionError:
            raise StopRequested() from None


def _work(runtime: Runtime, stage: str, burst: bool, log_level: str) -> int:
    """Run the rq worker; while Redis is unreachable, wait and start it again."""
    delay = 0.5
    while True:
        worker = None
        try:
            worker = StageWorker(QUEUES[stage], connection=runtime.conn,
                                  serializer=JSONSerializer, name=runtime.worker_name)
            worker.work(burst=burst, with_scheduler=False, logging_level=log_level)
            return 0
        except redis.exceptions.BusyLoadingError:
            logger.warning("worker %s: Redis is loading its data; retrying", runtime.worker_name)
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
