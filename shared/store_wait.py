"""A stage waiting out an unreachable job-file store (shared/store.py), lease held.

An unreachable store is not the job's fault, so it costs no attempt: the stage (shared/stage.py)
asks the store again once a second while its heartbeat keeps the lease, and goes on when the
store answers (never sooner than a second after the failure); a cancel or a lost lease still
stops it (`StageContext.check`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from shared.audit import audit
from shared.store import StoreUnavailable

if TYPE_CHECKING:
    from shared.stage import StageContext

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

STORE_POLL_S = 1.0  # how often a waiting stage asks the store again


def when_reachable(ctx: StageContext, call: Callable[[], _T]) -> _T:
    """`call()`, run again while it finds the job-file store out of reach."""
    while True:
        try:
            return call()
        except StoreUnavailable as exc:
            wait_for_store(ctx, exc)


def wait_for_store(ctx: StageContext, exc: StoreUnavailable) -> None:
    """Hold the stage (the heartbeat keeps the lease) until the job-file store answers."""
    logger.warning("job %s %s#%s: %s; waiting for it before going on (no attempt is spent)",
                   ctx.job.id, ctx.stage, ctx.attempt, exc)
    audit(ctx.runtime, "store-wait", job=ctx.job.id, stage=ctx.stage, attempt=ctx.attempt,
          exec=ctx.exec_id)
    t0 = time.monotonic()
    while True:  # asked again after a pause even if it answers at once: a store that has just
        ctx.check()  # restarted lists before its volumes serve, and the call would fail again
        time.sleep(STORE_POLL_S)
        try:
            ctx.settings.layout.store.check()
            break
        except StoreUnavailable:
            continue
    logger.info("job %s %s#%s: the job-file store answers again after %.1fs", ctx.job.id,
                ctx.stage, ctx.attempt, time.monotonic() - t0)
