"""job.json mirrors written off the request path, by one background thread.

A new job is durable once its Redis transaction commits (appendfsync always), and `202` waits
for exactly that. Its `jobs/<id>/job.json` mirror (what `recover --from-disk` reads if Redis is
lost entirely) is written the same way as ever (temp file, fsync, rename, fsync of the folder),
but here, a few milliseconds later and in batches, rather than with two fsyncs inside every
submission. It is published without overwriting: if a worker's first transition mirrored the
job already, that newer file stays. A bounded queue keeps memory flat: past `MAX_PENDING` the
caller writes the mirror itself. `close()` writes what is still queued.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading
from pathlib import Path

from shared.layout import Layout
from shared.models import JobRecord
from shared.storage import atomic_write_json, fsync_dir

logger = logging.getLogger(__name__)

MAX_PENDING = 5000
BATCH = 500  # mirrors made durable together


def write_mirror(data_dir: Path, rec: JobRecord) -> None:
    """The job's job.json now, replacing what is there: a transition's record is the newest.
    A failure is logged: the Redis record stays the truth; the mirror is for disaster."""
    try:
        atomic_write_json(Layout(data_dir).job_record(rec.id), rec.model_dump(mode="json"))
    except OSError as exc:
        logger.warning("job %s: could not mirror job.json: %s", rec.id, exc)


def write_mirrors(data_dir: Path, recs: list[JobRecord]) -> None:
    """New jobs' jobs/<id>/job.json files, durable when it returns.

    Each is written to a temp file, then all are fsynced, linked into place only if no mirror
    is there yet (one there was written by a later transition, so it is newer), and their
    folders fsynced. Done as a batch, the first fsync commits the filesystem's journal for all
    of them and the rest find little left to do. A failure is logged: the Redis record stays
    the truth.
    """
    staged: list[tuple[JobRecord, Path, Path]] = []
    for rec in recs:
        path = Layout(data_dir).job_record(rec.id)
        data = json.dumps(rec.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".job.json.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data + b"\n")
            staged.append((rec, path, Path(name)))
        except OSError as exc:
            logger.warning("job %s: could not mirror job.json: %s", rec.id, exc)
    durable = []
    for rec, path, tmp in staged:  # data first: the first fsync commits most of the batch
        try:
            fd = os.open(tmp, os.O_RDONLY)  # fsync through a new descriptor: same file
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            durable.append((rec, path, tmp))
        except OSError as exc:
            logger.warning("job %s: could not mirror job.json: %s", rec.id, exc)
    for rec, path, tmp in durable:  # then every name, then every folder once
        try:
            os.link(tmp, path)  # never replaces: a newer mirror wins
        except FileExistsError:
            pass
        except OSError as exc:
            logger.warning("job %s: could not mirror job.json: %s", rec.id, exc)
    for rec, path, tmp in staged:
        tmp.unlink(missing_ok=True)
        try:
            fsync_dir(path.parent)
        except OSError as exc:
            logger.warning("job %s: could not mirror job.json: %s", rec.id, exc)


class MirrorWriter:
    def __init__(self, data_dir: Path, max_pending: int = MAX_PENDING) -> None:
        self.data_dir = Path(data_dir)
        self._queue: queue.Queue[JobRecord | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="job-mirror", daemon=True)
        self._thread.start()

    def submit(self, rec: JobRecord) -> None:
        """Mirror `rec` soon; right now (in this thread) if the writer is that far behind."""
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            write_mirrors(self.data_dir, [rec])

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("job mirrors: %d still unwritten after %.0f s", self.pending(),
                           timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            recs = [rec for rec in batch if rec is not None]
            if recs:
                write_mirrors(self.data_dir, recs)
            if len(recs) < len(batch):
                return
