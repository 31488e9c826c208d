"""Pieces: a stage's output published bit by bit, so the next stage can start on the first one.

A stage with `StageSpec.pieces` writes its output in numbered pieces into
`jobs/<id>/<stage>.pieces/`: a data file renamed into place, then a small JSON meta file (its
size and sha256, and what it covers) renamed after it. A piece whose meta is missing or does not
match its data is not published. Pieces stay until the job ends, so a resumed execution of either
stage picks up where the last published piece left off: the producer keeps what is published
and makes the rest; the consumer reads them again from the first.

With PIPELINE_OVERLAP, a producer whose first piece comes within moments opens its next stage as
it starts (`JobStore.open_next`), so the consumer is up and waiting when the first piece lands;
a slow one (a voice that speaks the whole text before it has a piece) opens it on its first
piece, so no worker waits idle behind it. After each piece the producer rings a doorbell, `XADD
ja:pieces:<job>:<stage>`, in a transaction fenced by its lease (an execution that lost its lease
announces nothing). A reader blocks on that stream for at most `POLL_S` and then looks at the
files, so a piece is picked up within milliseconds of its publish, and one published by an
execution that crashed before its doorbell is still found. The reader's pieces end when the
producing stage is done in the job record and every piece its final manifest counts has been
read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from shared import keys
from shared.errors import LeaseLost, StageFailed
from shared.storage import atomic_write_json, fsync_dir, read_json, sha256_file

if TYPE_CHECKING:
    from shared.stage import StageContext

POLL_S = 0.1  # longest a reader sleeps before it looks at the files again
DOORBELL_MAXLEN = 10_000
PIECES_INFO = "pieces"  # key of the final manifest's info: how many pieces the stage published


def pieces_dir(job_dir: Path, stage: str) -> Path:
    return Path(job_dir) / f"{stage}.pieces"


@dataclass(frozen=True)
class Piece:
    """One published piece: its number, data file and meta (what it covers)."""

    stage: str
    n: int
    path: Path
    meta: dict[str, Any]


def piece_paths(folder: Path, prefix: str, suffix: str, n: int) -> tuple[Path, Path]:
    name = f"{prefix}_{n:05d}"
    return folder / f"{name}{suffix}", folder / f"{name}.json"


def read_piece(folder: Path, stage: str, prefix: str, suffix: str, n: int,
               *, verify: bool = True) -> Piece | None:
    """Piece `n` if it is published and intact, else None."""
    data, meta_path = piece_paths(folder, prefix, suffix, n)
    try:
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or data.stat().st_size != meta["size"]:
            return None
        if verify and sha256_file(data) != meta["sha256"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return Piece(stage, n, data, meta)


def write_piece(folder: Path, prefix: str, suffix: str, n: int, tmp: Path,
                meta: dict[str, Any]) -> Piece:
    """Publish a finished data file `tmp` as piece `n`: fsync, rename, meta last."""
    data, meta_path = piece_paths(folder, prefix, suffix, n)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, data)
    full = {**meta, "n": n, "size": data.stat().st_size, "sha256": sha256_file(data)}
    atomic_write_json(meta_path, full)
    fsync_dir(folder)
    return Piece(folder.name.removesuffix(".pieces"), n, data, full)


def pieces_gone(job_dir: Path, stage: str, prefix: str, suffix: str) -> bool:
    """Whether a stage's pieces are not on disk (cleared when the job finished): a stage run
    again after that reads the finished outputs instead."""
    return read_piece(pieces_dir(job_dir, stage), stage, prefix, suffix, 0, verify=False) is None


class PieceWriter:
    """The producing side, for one stage execution: announce pieces, open the next stage."""

    def __init__(self, ctx: StageContext, prefix: str, suffix: str, *,
                 soon: bool = True) -> None:
        """`soon`: the first piece comes within moments (a voice that speaks sentence by
        sentence), so the next stage is opened now and waits for it; otherwise it is opened
        on the first piece, and no worker waits idle behind a slow producer."""
        self.ctx, self.prefix, self.suffix = ctx, prefix, suffix
        self.folder = pieces_dir(ctx.job_dir, ctx.stage)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._opened = not ctx.settings.pipeline_overlap
        if not self._opened and soon:
            self._open_next()
        for stale in self.folder.glob(f".{prefix}_*"):  # temp files of executions gone since
            if ctx.exec_id not in stale.name:
                stale.unlink(missing_ok=True)

    def _open_next(self) -> None:
        self.ctx.runtime.store.open_next(self.ctx.job.id, self.ctx.stage, self.ctx.exec_id)
        self._opened = True

    def existing(self, n: int) -> Piece | None:
        """Piece `n` if an earlier execution published it (a resumed stage keeps it)."""
        return read_piece(self.folder, self.ctx.stage, self.prefix, self.suffix, n)

    def publish(self, n: int, tmp: Path, meta: dict[str, Any]) -> Piece:
        """Publish `tmp` as piece `n` and ring the doorbell; raises LeaseLost if this
        execution no longer owns the stage (the piece is then not announced)."""
        try:
            self.ctx.check()
            self.ctx.confirm_lease()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        piece = write_piece(self.folder, self.prefix, self.suffix, n, tmp, meta)
        self.announce(n)
        return piece

    def announce(self, n: int) -> None:
        ctx = self.ctx
        conn = ctx.runtime.conn
        if not self._opened:
            self._open_next()
        lease_key = keys.lease(ctx.job.id, ctx.stage)
        with conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(lease_key)
                    holder = pipe.get(lease_key)
                    if holder is None or keys.text(holder) != ctx.exec_id:
                        pipe.reset()
                        if holder is None and ctx.hold_lease():  # expired in an outage
                            continue
                        raise LeaseLost(f"job {ctx.job.id}: {ctx.stage} lease lost before "
                                        f"piece {n} was announced")
                    pipe.multi()
                    pipe.xadd(keys.pieces(ctx.job.id, ctx.stage), {"n": str(n)},
                              maxlen=DOORBELL_MAXLEN, approximate=True)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        from shared.stage import audit

        audit(ctx.runtime, "piece", job=ctx.job.id, stage=ctx.stage, n=n, exec=ctx.exec_id)


class PieceReader:
    """The consuming side: an upstream stage's pieces in order, as they are published."""

    def __init__(self, ctx: StageContext, stage: str, prefix: str, suffix: str) -> None:
        self.ctx, self.stage, self.prefix, self.suffix = ctx, stage, prefix, suffix
        self.folder = pieces_dir(ctx.job_dir, stage)
        self.next = 0
        self.finished = False
        self._last_id = b"0-0"
        self._total: int | None = None

    def _ready(self) -> list[Piece]:
        out = []
        while (self._total is None or self.next < self._total) and (
                piece := read_piece(self.folder, self.stage, self.prefix, self.suffix,
                                    self.next)) is not None:
            out.append(piece)
            self.next += 1
        if out:
            from shared.stage import audit

            audit(self.ctx.runtime, "piece-read", job=self.ctx.job.id, stage=self.ctx.stage,
                  upstream=self.stage, first=out[0].n, last=out[-1].n, exec=self.ctx.exec_id)
        return out

    def _upstream_done(self) -> bool:
        raw = self.ctx.runtime.conn.hmget(keys.job(self.ctx.job.id), ["status", "stages"])
        status = json.loads(raw[0]) if raw[0] else None
        if status in ("failed", "canceled"):
            self.ctx.job_ended(status)
        stages = json.loads(raw[1]) if raw[1] else {}
        info = stages.get(self.stage) if isinstance(stages, dict) else None
        return isinstance(info, dict) and info.get("status") == "done"

    def poll(self, block_s: float = POLL_S) -> list[Piece]:
        """The pieces published since the last call, in order; waits up to `block_s` for
        one. Sets `finished` once the upstream stage is done and all its pieces were read."""
        if self.finished:
            return []
        self.ctx.check()
        out = self._ready()
        if out:
            return out
        if self._total is None and self._upstream_done():
            self._total = self._count()
        if self._total is not None:
            out = self._ready()
            if self.next >= self._total:
                self.finished = True
            elif not out:
                raise StageFailed(f"the {self.stage} stage is done but its piece {self.next} "
                                  f"of {self._total} is missing or damaged in {self.folder}")
            return out
        if block_s > 0:
            self._wait(block_s)
        return self._ready()

    def _count(self) -> int:
        from shared.checkpoint import load_manifest

        manifest = load_manifest(self.ctx.job_dir / self.stage, verify=False)
        if manifest is None or not isinstance(manifest.info.get(PIECES_INFO), int):
            raise StageFailed(f"the {self.stage} stage is done but its manifest does not say "
                              "how many pieces it published")
        return int(manifest.info[PIECES_INFO])

    def _wait(self, block_s: float) -> None:
        """Sleep until the doorbell rings or `block_s` passes."""
        conn = self.ctx.runtime.conn
        try:
            reply: Any = conn.xread({keys.pieces(self.ctx.job.id, self.stage): self._last_id},
                                    count=1000, block=max(1, int(block_s * 1000)))
        except redis.RedisError:
            time.sleep(block_s)  # the files are still read; the heartbeat minds the lease
            return
        for _, entries in reply or []:
            if entries:
                self._last_id = bytes(entries[-1][0])

    def __iter__(self) -> Iterator[Piece]:
        while not self.finished:
            yield from self.poll()
