"""Live sessions: the records the orchestrator and the live workers share (their Redis keys are
the `keys.live_*` ones), and the loop a live worker runs (claim sessions by lease, serve each in a
thread, hand back on exit).

Data flow of one session `<id>` (every stream bounded by MAXLEN, every key with a TTL):

    client --WS--> orchestrator --XADD ctl--> live-audio  --XADD speech--> live-visual
                                --XADD audio_in--^   (PCM of audio lines: shared/live_audio.py)
    client <--WS-- orchestrator <--XREAD out-------------------------------------'

A worker serves a session while it holds the session's lease for its role (`audio`, `visual`),
renewed every third of LIVE_LEASE_TTL_S (shared/leases.py); a worker that dies lets the lease
expire and another worker of that role claims the session and carries on from the positions
stored in Redis. Live workers beat in shared/presence.py, as batch workers do.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis
from pydantic import BaseModel

from shared import keys
from shared.keys import text
from shared.leases import Lease
from shared.presence import Presence

logger = logging.getLogger(__name__)

CTL_MAXLEN = 200  # client commands kept per session
SPEECH_MAXLEN = 400  # speech pieces (one per sentence) kept per session
OUT_MAXLEN = 250  # media fragments and events kept per session (~30 s of stream)
CLAIM_STAGGER_S = 0.5  # per session already served: how long a busier worker lets others claim
STREAM_TTL_MARGIN_S = 60.0  # stream keys outlive the session record by this much


class SessionRecord(BaseModel):
    """A live session as stored in Redis (JSON, TTL = LIVE_IDLE_TIMEOUT_S, renewed on use)."""

    id: str
    avatar_id: str
    voice: str = "piper"
    renderer: str = "portrait"
    size: int = 512
    fps: int = 25
    aspect: str = "1:1"
    framing: str = "face"
    width: int = 512
    height: int = 512
    created_at: float

    @property
    def cost(self) -> float:
        """Capacity units: 1.0 is a 512x512 session at 25 fps."""
        return self.width * self.height * self.fps / (512 * 512 * 25)


def load(conn: redis.Redis, session_id: str) -> SessionRecord | None:
    raw = conn.get(keys.live_session(session_id))
    return SessionRecord.model_validate_json(raw) if raw else None


def active(conn: redis.Redis) -> list[SessionRecord]:
    """Every live session, oldest first; ids whose record expired are dropped from the set."""
    ids = [text(i) for i in conn.zrange(keys.LIVE_SESSIONS, 0, -1)]
    if not ids:
        return []
    raws = conn.mget([keys.live_session(i) for i in ids])
    gone = [i for i, raw in zip(ids, raws, strict=True) if not raw]
    if gone:
        conn.zrem(keys.LIVE_SESSIONS, *gone)
    return [SessionRecord.model_validate_json(raw) for raw in raws if raw]


def end(conn: redis.Redis, session_id: str) -> bool:
    """End a session: workers notice the record is gone and stop; every key goes."""
    pipe = conn.pipeline(transaction=True)
    pipe.xadd(keys.live_ctl(session_id), {"type": "close"}, maxlen=CTL_MAXLEN, approximate=True)
    pipe.delete(keys.live_session(session_id))
    pipe.zrem(keys.LIVE_SESSIONS, session_id)
    existed = pipe.execute()[1]
    expire_soon(conn, session_id)
    return bool(existed)


def expire_soon(conn: redis.Redis, session_id: str, seconds: int = 10) -> None:
    """The keys of an ended session stay briefly (workers and relay read the close), then go."""
    pipe = conn.pipeline(transaction=False)
    for key in keys.live_session_keys(session_id)[1:]:
        pipe.expire(key, seconds)
    pipe.execute()


def xadd(conn: redis.Redis | Any, key: str, fields: dict[str, Any], maxlen: int,
         ttl_s: float) -> Any:
    """XADD to a bounded stream and keep its TTL (works on a pipeline too)."""
    conn.xadd(key, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    return conn.expire(key, int(ttl_s + STREAM_TTL_MARGIN_S))


def tell_error(conn: redis.Redis, session_id: str, message: str, ttl_s: float) -> Any:
    """Give the session's clients an error event with `message` (on its out stream)."""
    data = json.dumps({"type": "error", "message": message})
    return xadd(conn, keys.live_out(session_id), {"kind": "event", "data": data}, OUT_MAXLEN,
                ttl_s)


def stream_id(value: str) -> tuple[int, int]:
    """A stream entry id ("ms-seq") as a pair that orders as Redis orders ids."""
    ms, _, seq = value.partition("-")
    return int(ms or 0), int(seq or 0)


def before(value: str) -> str:
    """The id just before entry `value`: XREAD after it reads `value` again."""
    ms, seq = stream_id(value)
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2 ** 64 - 1}" if ms else "0-0"


Serve = Callable[[SessionRecord, Lease, threading.Event], None]


class LiveWorker:
    """Claims sessions for one role and serves each in its own thread with `serve(record,
    lease, stopping)`; `serve` returns when the session ends, the lease is lost, or `stopping`
    is set. Up to LIVE_SESSIONS_PER_WORKER sessions at a time."""

    def __init__(self, conn: redis.Redis, role: str, serve: Serve, *, ttl_s: float,
                 max_sessions: int) -> None:
        self.conn, self.role, self.serve = conn, role, serve
        self.ttl_s, self.max_sessions = ttl_s, max_sessions
        self.name = f"live-{role}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()
        self.threads: dict[str, threading.Thread] = {}
        self.leases: dict[str, Lease] = {}
        self.presence = Presence(conn, keys.live_workers(role), lambda: self.name,
                                 slots_key=keys.live_slots(role), slots=max_sessions)

    def run_until_signalled(self, nice: int = 0) -> None:
        """`run` in a worker process's main thread: SIGTERM or SIGINT ends it, letting the
        sessions' threads finish their fragment and give their leases back."""
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.run(nice=nice)

    def run(self, poll_s: float = 0.2, nice: int = 0) -> None:
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except OSError as exc:
                logger.warning("%s: cannot take nice value %d (%s); running at %d", self.name,
                               nice, exc, os.getpriority(os.PRIO_PROCESS, 0))
        logger.info("%s: serving live sessions (up to %d, nice %d)", self.name,
                    self.max_sessions, os.getpriority(os.PRIO_PROCESS, 0))
        beat = threading.Thread(target=self._heartbeat, name="live-heartbeat", daemon=True)
        beat.start()
        self.presence.start()
        while not self.stopping.is_set():
            try:
                self._claim_new()
            except redis.RedisError as exc:
                logger.warning("%s: Redis unavailable (%s); retrying", self.name, exc)
                self.stopping.wait(1.0)
            self.stopping.wait(poll_s)
        for thread in list(self.threads.values()):
            thread.join(timeout=5)
        self.presence.stop()

    def _heartbeat(self) -> None:
        """Renew every lease this worker holds, every third of the TTL."""
        while not self.stopping.wait(self.ttl_s / 3):
            for held in list(self.leases.values()):
                try:
                    held.renew()
                except redis.RedisError as exc:
                    logger.warning("%s: cannot renew %s: %s", self.name, held.key, exc)

    def _claim_new(self) -> None:
        self.threads = {k: t for k, t in self.threads.items() if t.is_alive()}
        if len(self.threads) >= self.max_sessions:
            return
        for rec in active(self.conn):
            if rec.id in self.threads or len(self.threads) >= self.max_sessions:
                continue
            # spread sessions over the workers (each draws its sessions under one GIL): a
            # worker that already serves k waits k x CLAIM_STAGGER_S, so an idler one wins
            if time.time() - rec.created_at < CLAIM_STAGGER_S * len(self.threads):
                continue
            held = Lease(self.conn, keys.live_lease(rec.id, self.role), self.name, self.ttl_s)
            if not held.claim():
                continue
            logger.info("%s: claimed session %s", self.name, rec.id)
            self.leases[rec.id] = held
            thread = threading.Thread(target=self._serve, args=(rec, held),
                                      name=f"live-{self.role}-{rec.id}", daemon=True)
            self.threads[rec.id] = thread
            thread.start()

    def _serve(self, rec: SessionRecord, held: Lease) -> None:
        try:
            self.serve(rec, held, self.stopping)
        except Exception:  # a session's failure must not take the worker's other sessions
            logger.exception("%s: session %s failed", self.name, rec.id)
            try:
                tell_error(self.conn, rec.id, f"the live {self.role} worker failed on this "
                           "session; it is being restarted", 60)
            except redis.RedisError:
                pass
        finally:
            self.leases.pop(rec.id, None)
            try:
                if not self.conn.exists(keys.live_session(rec.id)):  # ended: its keys go
                    expire_soon(self.conn, rec.id)
                held.release()
            except redis.RedisError:
                pass
            logger.info("%s: session %s released", self.name, rec.id)
