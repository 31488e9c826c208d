"""Live sessions: the Redis keys and records the orchestrator and the live workers share, and the
loop a live worker runs (claim sessions by lease, serve each in a thread, hand back on exit).

Data flow of one session `<id>` (every stream bounded by MAXLEN, every key with a TTL):

    client --WS--> orchestrator --XADD ctl--> live-audio  --XADD speech--> live-visual
                                --XADD audio_in--^   (PCM of audio lines: shared/live_audio.py)
    client <--WS-- orchestrator <--XREAD out-------------------------------------'

A worker serves a session while it holds the session's lease for its role (`audio`, `visual`),
renewed every third of LIVE_LEASE_TTL_S; a worker that dies lets the lease expire and another
worker of that role claims the session and carries on from the positions stored in Redis.
"""

from __future__ import annotations

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

from shared.keys import PREFIX, text

logger = logging.getLogger(__name__)

ROLES = ("audio", "visual")
SESSIONS = f"{PREFIX}:live:sessions"  # sorted set: session id -> created_at
CTL_MAXLEN = 200  # client commands kept per session
SPEECH_MAXLEN = 400  # speech pieces (one per sentence) kept per session
OUT_MAXLEN = 250  # media fragments and events kept per session (~30 s of stream)
CLAIM_STAGGER_S = 0.5  # per session already served: how long a busier worker lets others claim
WORKER_SEEN_S = 5.0  # a live worker not seen for this long is gone
STREAM_TTL_MARGIN_S = 60.0  # stream keys outlive the session record by this much


def session(session_id: str) -> str:
    return f"{PREFIX}:live:session:{session_id}"


def ctl(session_id: str) -> str:
    """Stream of client commands: type=say|stop|close|keyframe|audio.start (+ text, id, ...)."""
    return f"{PREFIX}:live:{session_id}:ctl"


def audio_in(session_id: str) -> str:
    """Stream of the PCM of the client's audio lines (kind=pcm|end), read by live-audio, which
    trims what it has forwarded."""
    return f"{PREFIX}:live:{session_id}:audio_in"


def speech(session_id: str) -> str:
    """Stream of speech pieces from live-audio: one per sentence (kind=piece) or per piece of
    an audio line as it arrives (kind=audio)."""
    return f"{PREFIX}:live:{session_id}:speech"


def out(session_id: str) -> str:
    """Stream of what the client gets: kind=init|frag|event, in stream order."""
    return f"{PREFIX}:live:{session_id}:out"


def init(session_id: str) -> str:
    """Hash: the current stream's init segment and its ready fields (mime, width, ...)."""
    return f"{PREFIX}:live:{session_id}:init"


def lease(session_id: str, role: str) -> str:
    return f"{PREFIX}:live:{session_id}:lease:{role}"


def position(session_id: str, role: str) -> str:
    """The last stream entry a role has consumed, so a worker taking over resumes after it
    (`role` is also "audio_in": live-audio's place in the audio_in stream)."""
    return f"{PREFIX}:live:{session_id}:pos:{role}"


def clock(session_id: str) -> str:
    """The wall time (UNIX seconds) of media time 0: a new encoder continues the timeline."""
    return f"{PREFIX}:live:{session_id}:clock"


def workers(role: str) -> str:
    """Sorted set: live worker name -> last seen (UNIX seconds)."""
    return f"{PREFIX}:live:workers:{role}"


def slots(role: str) -> str:
    """Hash: live worker name -> how many sessions it serves at once (its slots)."""
    return f"{PREFIX}:live:slots:{role}"


def viewers(session_id: str) -> str:
    """Sorted set: the session's open sockets (a viewer id each) -> last renewed (UNIX seconds),
    kept by the orchestrator (orchestrator/viewers.py)."""
    return f"{PREFIX}:live:{session_id}:viewers"


def session_keys(session_id: str) -> list[str]:
    return [session(session_id), ctl(session_id), speech(session_id), out(session_id),
            clock(session_id), init(session_id), audio_in(session_id), viewers(session_id),
            *(lease(session_id, r) for r in ROLES),
            *(position(session_id, r) for r in (*ROLES, "audio_in"))]


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
    raw = conn.get(session(session_id))
    return SessionRecord.model_validate_json(raw) if raw else None


def active(conn: redis.Redis) -> list[SessionRecord]:
    """Every live session, oldest first; ids whose record expired are dropped from the set."""
    ids = [text(i) for i in conn.zrange(SESSIONS, 0, -1)]
    if not ids:
        return []
    raws = conn.mget([session(i) for i in ids])
    gone = [i for i, raw in zip(ids, raws, strict=True) if not raw]
    if gone:
        conn.zrem(SESSIONS, *gone)
    return [SessionRecord.model_validate_json(raw) for raw in raws if raw]


def live_workers(conn: redis.Redis, role: str) -> int:
    """How many live workers of `role` were seen in the last WORKER_SEEN_S seconds."""
    return int(conn.zcount(workers(role), time.time() - WORKER_SEEN_S, "+inf"))


def live_slots(conn: redis.Redis, role: str) -> tuple[int, int]:
    """(workers, sessions they serve at once in all) of the live workers of `role` seen in the
    last WORKER_SEEN_S seconds; the slots of workers gone are forgotten."""
    seen = [text(n) for n in conn.zrangebyscore(workers(role), time.time() - WORKER_SEEN_S,
                                                "+inf")]
    held = {text(k): int(v) for k, v in conn.hgetall(slots(role)).items()}
    gone = set(held) - set(seen)
    if gone:
        conn.hdel(slots(role), *gone)
    return len(seen), sum(held.get(name, 0) for name in seen)


def end(conn: redis.Redis, session_id: str) -> bool:
    """End a session: workers notice the record is gone and stop; every key goes."""
    pipe = conn.pipeline(transaction=True)
    pipe.xadd(ctl(session_id), {"type": "close"}, maxlen=CTL_MAXLEN, approximate=True)
    pipe.delete(session(session_id))
    pipe.zrem(SESSIONS, session_id)
    existed = pipe.execute()[1]
    expire_soon(conn, session_id)
    return bool(existed)


def expire_soon(conn: redis.Redis, session_id: str, seconds: int = 10) -> None:
    """The keys of an ended session stay briefly (workers and relay read the close), then go."""
    pipe = conn.pipeline(transaction=False)
    for key in session_keys(session_id)[1:]:
        pipe.expire(key, seconds)
    pipe.execute()


def xadd(conn: redis.Redis | Any, key: str, fields: dict[str, Any], maxlen: int,
         ttl_s: float) -> Any:
    """XADD to a bounded stream and keep its TTL (works on a pipeline too)."""
    conn.xadd(key, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    return conn.expire(key, int(ttl_s + STREAM_TTL_MARGIN_S))


def stream_id(value: str) -> tuple[int, int]:
    """A stream entry id ("ms-seq") as a pair that orders as Redis orders ids."""
    ms, _, seq = value.partition("-")
    return int(ms or 0), int(seq or 0)


def before(value: str) -> str:
    """The id just before entry `value`: XREAD after it reads `value` again."""
    ms, seq = stream_id(value)
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2 ** 64 - 1}" if ms else "0-0"


class Lease:
    """This worker's hold on one session for one role, renewed by the worker's heartbeat
    thread (a sentence being synthesized or a slow frame never lets it lapse); `lost` turns true
    when another worker holds it or it lapsed."""

    def __init__(self, conn: redis.Redis, session_id: str, role: str, owner: str,
                 ttl_s: float) -> None:
        self.conn, self.key, self.owner = conn, lease(session_id, role), owner
        self.ttl_ms = max(100, int(ttl_s * 1000))
        self.lost = False

    def claim(self) -> bool:
        return bool(self.conn.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lease; False (and `lost`) if this worker no longer holds it."""
        if self.lost:
            return False
        holder = self.conn.get(self.key)
        if holder is None or text(holder) != self.owner:
            self.lost = True
            return False
        self.conn.pexpire(self.key, self.ttl_ms)
        return True

    def release(self) -> None:
        holder = self.conn.get(self.key)
        if holder is not None and text(holder) == self.owner:
            self.conn.delete(self.key)


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
        while not self.stopping.is_set():
            try:
                pipe = self.conn.pipeline(transaction=False)
                pipe.hset(slots(self.role), self.name, self.max_sessions)
                pipe.zadd(workers(self.role), {self.name: time.time()})
                pipe.execute()
                self._claim_new()
            except redis.RedisError as exc:
                logger.warning("%s: Redis unavailable (%s); retrying", self.name, exc)
                self.stopping.wait(1.0)
            self.stopping.wait(poll_s)
        for thread in list(self.threads.values()):
            thread.join(timeout=5)
        try:
            self.conn.zrem(workers(self.role), self.name)
            self.conn.hdel(slots(self.role), self.name)
        except redis.RedisError:
            pass

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
            held = Lease(self.conn, rec.id, self.role, self.name, self.ttl_s)
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
                xadd(self.conn, out(rec.id), {"kind": "event", "data": _error_event(
                    f"the live {self.role} worker failed on this session; it is being "
                    "restarted")}, OUT_MAXLEN, 60)
            except redis.RedisError:
                pass
        finally:
            self.leases.pop(rec.id, None)
            try:
                if not self.conn.exists(session(rec.id)):  # ended: what this worker wrote goes
                    expire_soon(self.conn, rec.id)
                held.release()
            except redis.RedisError:
                pass
            logger.info("%s: session %s released", self.name, rec.id)


def _error_event(message: str) -> str:
    import json

    return json.dumps({"type": "error", "message": message})
