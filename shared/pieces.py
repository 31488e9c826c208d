"""Pieces: a stage's output published bit by bit, so the next stage can start on the first one.

The one module for the pieces contract, its writers and its readers. A stage with
`StageSpec.pieces` writes its output in numbered pieces into `jobs/<id>/<stage>.pieces/`
(`Layout.pieces_dir`), one kind per stage (`KINDS`):

    audio.pieces/piece_<n>.wav    speech, sentence by sentence (or cut at pauses)
    visual.pieces/chunk_<k>.mp4   silent video chunks, drawn on a grid of frames
    compose.pieces/seg_<k>.m4s    watch-stream segments (moof+mdat), after `init.mp4`
                                  (ftyp+moov), and `end.json` ({"segments": N}) after the last

A piece is a data file renamed into place, then a small JSON meta file (`<name>.json`: its
size and sha256, and what it covers) renamed after it; one whose meta is missing or does not
match its data is not published. With a remote store (shared/store.py) the data is uploaded,
then the meta: a reader reads the meta from the store and fetches the data into its cache.
Temp files are `.<name>.<exec>.<suffix>` beside them. Pieces
stay until the job ends, so a resumed execution of either stage picks up where the last
published piece left off: the producer keeps what is published and makes the rest; the
consumer reads them again from the first.

With PIPELINE_OVERLAP, a producer whose first piece comes within moments opens its next stage as
it starts (`JobStore.open_next`), so the consumer is up and waiting when the first piece lands;
a slow one (a voice that speaks the whole text before it has a piece) opens it on its first
piece, so no worker waits idle behind it. After each piece the producer rings a doorbell, `XADD
ja:pieces:<job>:<stage>` (a Redis stream), in a transaction fenced by its lease (an execution
that lost its lease announces nothing). A reader blocks on the doorbell for at most `POLL_S` and
then looks at the files, so a piece is picked up within milliseconds of its publish, and one
published by an execution that crashed before its doorbell is still found. The reader's pieces
end when the producing stage is done in the job record and every piece its final manifest
counts has been read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import redis

from shared import keys
from shared.audit import audit
from shared.checkpoint import load_manifest
from shared.errors import LeaseLost, StageFailed
from shared.layout import Layout
from shared.storage import atomic_write_json, fsync_dir, sha256_file
from shared.store import LocalStore, Store

if TYPE_CHECKING:
    from shared.stage import StageContext

logger = logging.getLogger(__name__)

POLL_S = 0.1  # longest a reader sleeps before it looks at the files again
DOORBELL_MAXLEN = 10_000
PIECES_INFO = "pieces"  # key of the final manifest's info: how many pieces the stage published
WATCH_INIT = "init.mp4"  # compose.pieces/: the watch stream's header, before its segments
WATCH_END = "end.json"  # compose.pieces/: {"segments": N}, written after the last segment


@dataclass(frozen=True)
class PieceKind:
    """What one stage's pieces are called: `<prefix>_<n:05d><suffix>`."""

    stage: str
    prefix: str
    suffix: str


SPEECH_PIECES = PieceKind("audio", "piece", ".wav")
CHUNKS = PieceKind("visual", "chunk", ".mp4")
SEGMENTS = PieceKind("compose", "seg", ".m4s")
KINDS = {kind.stage: kind for kind in (SPEECH_PIECES, CHUNKS, SEGMENTS)}


@dataclass(frozen=True)
class Piece:
    """One published piece: its number, data file and meta (what it covers)."""

    stage: str
    n: int
    path: Path
    meta: dict[str, Any]


class PieceFiles:
    """One stage's pieces folder, as files: the contract without Redis."""

    def __init__(self, folder: Path, kind: PieceKind, store: Store | None = None) -> None:
        self.folder, self.kind = Path(folder), kind
        self.store = store if store is not None else LocalStore(self.folder.parent)

    @classmethod
    def of(cls, layout: Layout, job_id: str, stage: str) -> PieceFiles:
        return cls(layout.pieces_dir(job_id, stage), KINDS[stage], layout.store)

    def _name(self, n: int) -> str:
        return f"{self.kind.prefix}_{n:05d}"

    def data(self, n: int) -> Path:
        return self.folder / f"{self._name(n)}{self.kind.suffix}"

    def meta(self, n: int) -> Path:
        return self.folder / f"{self._name(n)}.json"

    def temp(self, n: int, tag: str) -> Path:
        """Where an execution (`tag`: its id) writes piece `n` before publishing it."""
        return self.folder / f".{self._name(n)}.{tag}{self.kind.suffix}"

    def remove_temps(self, keep_tag: str) -> None:
        """Remove the temp files of executions other than `keep_tag`'s (gone since)."""
        for stale in self.folder.glob(f".{self.kind.prefix}_*"):
            if keep_tag not in stale.name:
                stale.unlink(missing_ok=True)

    def published(self, n: int) -> bool:
        """Whether piece `n`'s meta is in place (renamed after its data: the data is whole)."""
        return self.store.read_bytes(self.meta(n)) is not None

    def read(self, n: int, *, verify: bool = True) -> Piece | None:
        """Piece `n` if it is published and intact (sha256 checked with `verify`), else None;
        its data is on the local disk (fetched from a remote store into the cache)."""
        try:
            meta = json.loads(self.store.read_bytes(self.meta(n)) or b"null")
            if not isinstance(meta, dict):
                return None
            data = self.store.fetch(self.data(n), size=meta["size"],
                                    sha256=meta["sha256"] if verify else None)
            if data is None or data.stat().st_size != meta["size"]:
                return None
            if verify and sha256_file(data) != meta["sha256"]:
                return None
        except (OSError, ValueError, KeyError):
            return None
        return Piece(self.kind.stage, n, data, meta)

    def read_bytes(self, n: int) -> bytes:
        """Piece `n`'s data, read once and checked against its meta's size and sha256;
        OSError if it is not there, ValueError if it does not match."""
        raw = self.store.read_bytes(self.meta(n))
        if raw is None:
            raise FileNotFoundError(f"{self.meta(n)} is not published")
        meta = json.loads(raw)
        local = self.store.fetch(self.data(n), size=meta["size"])
        if local is None:
            raise FileNotFoundError(f"{self.data(n)} is not published")
        data = local.read_bytes()
        if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError(f"{self.data(n)} is {len(data)} bytes and does not match its "
                             f"meta (size {meta['size']}, sha256 {meta['sha256'][:12]}...)")
        return data

    def write(self, n: int, tmp: Path, meta: dict[str, Any]) -> Piece:
        """Publish a finished data file `tmp` as piece `n`: fsync, rename, meta last."""
        data = self.data(n)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, data)
        full = {**meta, "n": n, "size": data.stat().st_size, "sha256": sha256_file(data)}
        self.store.push(data)
        atomic_write_json(self.meta(n), full)
        fsync_dir(self.folder)
        self.store.push(self.meta(n))
        return Piece(self.kind.stage, n, data, full)

    def gone(self) -> bool:
        """Whether the pieces are not on disk (cleared when the job finished): a stage run
        again after that reads the finished outputs instead."""
        return self.read(0, verify=False) is None

    def fetch(self, n: int) -> Path:
        """Piece `n`'s data on the local disk; StageFailed if it is not published whole."""
        piece = self.read(n, verify=False)
        if piece is None:
            raise StageFailed(f"piece {n} is missing or damaged in {self.folder}")
        return piece.path

    @property
    def watch_init(self) -> Path:
        return self.folder / WATCH_INIT

    def init_bytes(self) -> bytes | None:
        """The watch stream's header (`init.mp4`), None before it is written."""
        return self.store.read_bytes(self.watch_init)

    def write_init(self, data: bytes) -> None:
        """Write `init.mp4` once (a resumed execution finds it written)."""
        if self.store.read_bytes(self.watch_init) is None:
            self.store.put_bytes(self.watch_init, data)

    def end(self) -> int | None:
        """How many pieces there are, once `end.json` says so (None before)."""
        path = self.folder / WATCH_END
        raw = self.store.read_bytes(path)
        if raw is None:
            return None
        try:
            return int(json.loads(raw)["segments"])
        except (ValueError, KeyError, TypeError) as exc:  # written atomically: never half
            logger.warning("%s is unreadable (%s); ignored", path, exc)
            return None

    def write_end(self, count: int) -> bool:
        """Write `end.json` once; False if it was there already."""
        path = self.folder / WATCH_END
        if self.store.read_bytes(path) is not None:
            return False
        self.store.put_bytes(path, json.dumps({"segments": count}, indent=2,
                                              sort_keys=True).encode() + b"\n")
        return True


class PieceOutput(Protocol):
    """Where a producer publishes: a stage execution's `PieceWriter`, or an `UnannouncedWriter`
    (a folder outside any job: benchmarks, tests)."""

    files: PieceFiles
    tag: str

    def existing(self, n: int) -> Piece | None: ...

    def publish(self, n: int, tmp: Path, meta: dict[str, Any]) -> Piece: ...


class UnannouncedWriter:
    """Publishes pieces into a folder with no job, lease or doorbell: the producing code of a
    stage run on its own (scripts/bench_visual.py, scripts/quality_report.py, tests)."""

    def __init__(self, files: PieceFiles, tag: str = "local") -> None:
        self.files, self.tag = files, tag
        files.folder.mkdir(parents=True, exist_ok=True)

    def existing(self, n: int) -> Piece | None:
        return self.files.read(n)

    def publish(self, n: int, tmp: Path, meta: dict[str, Any]) -> Piece:
        return self.files.write(n, tmp, meta)


class PieceWriter:
    """The producing side, for one stage execution: publish and announce pieces, open the
    next stage."""

    def __init__(self, ctx: StageContext, *, soon: bool = True) -> None:
        """`soon`: the first piece comes within moments (a voice that speaks sentence by
        sentence), so the next stage is opened now and waits for it; otherwise it is opened
        on the first piece, and no worker waits idle behind a slow producer."""
        self.ctx, self.tag = ctx, ctx.exec_id
        self.files = PieceFiles.of(ctx.settings.layout, ctx.job.id, ctx.stage)
        self.files.folder.mkdir(parents=True, exist_ok=True)
        self._opened = not ctx.settings.pipeline_overlap
        if not self._opened and soon:
            self._open_next()
        self.files.remove_temps(keep_tag=ctx.exec_id)

    def _open_next(self) -> None:
        self.ctx.runtime.store.open_next(self.ctx.job.id, self.ctx.stage, self.ctx.exec_id)
        self._opened = True

    def temp(self, n: int) -> Path:
        """Where this execution writes piece `n` before `publish`."""
        return self.files.temp(n, self.tag)

    def existing(self, n: int) -> Piece | None:
        """Piece `n` if an earlier execution published it (a resumed stage keeps it)."""
        return self.files.read(n)

    def publish(self, n: int, tmp: Path, meta: dict[str, Any]) -> Piece:
        """Publish `tmp` as piece `n` and ring the doorbell; raises LeaseLost if this
        execution no longer owns the stage (the piece is then not announced)."""
        try:
            self.ctx.check()
            self.ctx.confirm_lease()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        piece = self.files.write(n, tmp, meta)
        self.announce(n)
        return piece

    def finish(self, count: int) -> None:
        """Mark the end of the pieces (`end.json`) and ring the doorbell once more."""
        if self.files.write_end(count):
            self.announce(count)

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
        audit(ctx.runtime, "piece", job=ctx.job.id, stage=ctx.stage, n=n, exec=ctx.exec_id)


class PieceReader:
    """The consuming side: an upstream stage's pieces in order, as they are published."""

    def __init__(self, ctx: StageContext, stage: str) -> None:
        self.ctx, self.stage = ctx, stage
        self.files = PieceFiles.of(ctx.settings.layout, ctx.job.id, stage)
        self.next = 0
        self.finished = False
        self._last_id = b"0-0"
        self._total: int | None = None

    def _ready(self) -> list[Piece]:
        out = []
        while (self._total is None or self.next < self._total) and (
                piece := self.files.read(self.next)) is not None:
            out.append(piece)
            self.next += 1
        if out:
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
                                  f"of {self._total} is missing or damaged in "
                                  f"{self.files.folder}")
            return out
        if block_s > 0:
            self._wait(block_s)
        return self._ready()

    def _count(self) -> int:
        layout = self.ctx.settings.layout
        stage_dir = layout.stage_dir(self.ctx.job.id, self.stage)
        manifest = load_manifest(stage_dir, verify=False, store=layout.store, fetch=False)
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
