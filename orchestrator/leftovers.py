"""What ended jobs leave on disk, swept by the elected reconciler at start and every SWEEP_EVERY_S.

Besides job.json and the stages' published outputs, a job's folder holds what its executions
write while they run: temp files beside a file being replaced (`.job.json.<random>.tmp`), work
folders (`<stage>.tmp-<exec>/`), an output being replaced (`<stage>.garbage-<ns>/`), a stage's
scratch (`audio.sentences/`) and pieces (`<stage>.pieces/`). An execution removes its own when
it ends; one SIGKILLed, or a job canceled while its worker was dead, leaves them for good. Once
a job has been over for SWEEP_AFTER_S (an execution still stopping, or a watch stream lagging
behind, has finished by then), they go: all of them but a failed job's compose pieces, the only
copy of the video it made before it failed (GET /v1/jobs/{id}/stream serves them). A succeeded
job's result is then kept once, in compose/: its watch stream plays that. A folder whose job has
no record is left alone: after Redis is lost, `recover --from-disk` resumes from those files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from shared import keys, pipeline
from shared.checkpoint import remove_tree
from shared.jobs import JobStore
from shared.layout import Layout
from shared.models import TERMINAL

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 600.0
BATCH = 500  # job records read per pipelined round trip
_SCRATCH = frozenset(s.scratch for s in pipeline.STAGES.values() if s.scratch is not None)


def leftovers(job_dir: Path) -> list[str]:
    """The names in a job's folder that its executions leave behind while they run."""
    try:
        entries = list(os.scandir(job_dir))
    except OSError:  # removed meanwhile (retention), or not a folder
        return []
    return sorted(e.name for e in entries if _left_by_executions(e.name))


def _left_by_executions(name: str) -> bool:
    if name.startswith(".") and name.endswith(".tmp"):  # beside job.json
        return True
    stage, _, kind = name.partition(".")
    return name in _SCRATCH or (stage in pipeline.STAGES and (
        kind == "pieces" or kind.startswith(("tmp-", "garbage-"))))


def _kept(name: str, status: str) -> bool:
    """Whether `name` stays after its job ended with `status`."""
    return status == "failed" and name == "compose.pieces"


class Sweeper:
    """Removes the leftovers of jobs that ended SWEEP_AFTER_S ago or more."""

    def __init__(self, store: JobStore, after_s: float) -> None:
        self.store = store
        self.after_s = after_s
        self.jobs_root = Layout(store.data_dir).jobs

    def sweep(self, jobs: Iterable[str] | None = None, now: float | None = None) -> int:
        """One pass over the folders of `jobs` (default: every job's); returns how many
        entries were removed."""
        now = time.time() if now is None else now
        try:
            folders = ([e.name for e in os.scandir(self.jobs_root) if e.is_dir()]
                       if jobs is None else list(jobs))
        except FileNotFoundError:
            return 0
        found = {job_id: names for job_id in folders
                 if (names := leftovers(self.jobs_root / job_id))}
        removed = 0
        ids = list(found)
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            with self.store.conn.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.hmget(keys.job(job_id), ["status", "finished_at", "updated_at"])
                replies = pipe.execute()
            for job_id, fields in zip(batch, replies, strict=True):
                status, ended = _ended(fields)
                if status is None or ended is None or now - ended < self.after_s:
                    continue  # running, ended lately, or no record (recover may need them)
                gone = [name for name in found[job_id] if not _kept(name, status)]
                for name in gone:
                    path = self.jobs_root / job_id / name
                    if path.is_dir() and not path.is_symlink():
                        remove_tree(path)
                    else:
                        path.unlink(missing_ok=True)
                if gone:
                    logger.info("job %s (%s): removed what its executions left: %s", job_id,
                                status, ", ".join(gone))
                removed += len(gone)
        return removed


def _ended(fields: list[bytes | None]) -> tuple[str | None, float | None]:
    """(status, when it ended) of a finished job's record; (None, None) for any other."""
    try:
        status, finished, updated = (json.loads(v) if v is not None else None for v in fields)
    except ValueError:
        return None, None
    if status not in TERMINAL:
        return None, None
    ended = finished if isinstance(finished, (int, float)) else updated
    return status, float(ended) if isinstance(ended, (int, float)) else None
