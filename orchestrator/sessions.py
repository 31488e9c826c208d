"""Live sessions on the orchestrator's side: create (validated like jobs, within the machine's
capacity), look up, list and end. The media itself is made by the live workers (shared/live.py)."""

from __future__ import annotations

import time
import uuid

import redis

from orchestrator.avatars import AvatarService
from orchestrator.schemas import SessionCreate
from orchestrator.settings import OrchestratorSettings
from shared import keys, live
from shared.engine_catalog import live_names
from shared.errors import Busy, InvalidInput, NotFound
from shared.models import MIN_FACE_PX, frame_size, original_face_width
from shared.presence import live_capacity

LIVE_VOICES = ("auto", *live_names("audio"))
LIVE_RENDERERS = ("auto", *live_names("visual"))


class SessionService:
    def __init__(self, conn: redis.Redis, settings: OrchestratorSettings,
                 avatars: AvatarService) -> None:
        self.conn, self.settings, self.avatars = conn, settings, avatars

    def create(self, body: SessionCreate) -> live.SessionRecord:
        avatar = self.avatars.get(body.avatar_id)
        if avatar is None:
            raise NotFound(f"no avatar with id {body.avatar_id!r}; "
                           "create one with POST /v1/avatars", code="avatar_not_found")
        if body.voice not in LIVE_VOICES:
            raise InvalidInput(f"voice {body.voice!r} cannot speak live; live sessions accept: "
                               f"{', '.join(LIVE_VOICES)}", code="unknown_voice")
        if body.renderer not in LIVE_RENDERERS:
            raise InvalidInput(
                f"renderer {body.renderer!r} cannot draw live; live sessions accept: "
                f"{', '.join(LIVE_RENDERERS)}", code="unknown_renderer")
        width, height = frame_size(body.size, body.aspect)
        if body.framing == "original":
            face = original_face_width(avatar.face_box[2], (avatar.width, avatar.height),
                                       (width, height))
            if face < MIN_FACE_PX:
                raise InvalidInput(
                    f"with framing 'original' the face would be {face:.0f} px wide in "
                    f"the {width}x{height} video; it needs at least {MIN_FACE_PX} px: "
                    "use framing 'face', a larger size, or a closer photo", code="face_too_small")
        voice = live_names("audio")[0] if body.voice == "auto" else body.voice
        renderer = live_names("visual")[0] if body.renderer == "auto" else body.renderer
        rec = live.SessionRecord(id=uuid.uuid4().hex, avatar_id=avatar.id, voice=voice,
                                 renderer=renderer, size=body.size,
                                 fps=body.fps, aspect=body.aspect, framing=body.framing,
                                 width=width, height=height, created_at=time.time())
        for role in keys.LIVE_ROLES:
            if live_capacity(self.conn, role)[0] == 0:
                raise Busy(f"no live {role} worker is running, so no session can start; "
                           f"start one (make run starts them) and try again",
                           code="no_live_worker")
        self._admit(rec)
        return rec

    def _admit(self, rec: live.SessionRecord) -> None:
        """Add the session unless it would take the machine past LIVE_MAX_SESSIONS (in 512x512
        25 fps units) or leave it without a worker of each role to serve it: checked and added
        in one WATCHed transaction."""
        limit = self.settings.live_max_sessions
        ttl = int(self.settings.live_idle_timeout_s)
        with self.conn.pipeline(transaction=True) as pipe:
            for _ in range(20):
                try:
                    pipe.watch(keys.LIVE_SESSIONS)
                    sessions = live.active(self.conn)
                    used = sum(s.cost for s in sessions)
                    if used + rec.cost > limit + 1e-6:
                        raise Busy(f"this machine is already running {used:g} of the "
                                   f"{limit:g} live sessions it can hold without stalling "
                                   f"(LIVE_MAX_SESSIONS, counted as 512x512 at 25 fps; this "
                                   f"one counts {rec.cost:.2g}); close a session or try later",
                                   code="live_capacity")
                    self._check_slots(len(sessions))
                    pipe.multi()
                    pipe.set(keys.live_session(rec.id), rec.model_dump_json(), ex=ttl)
                    pipe.zadd(keys.LIVE_SESSIONS, {rec.id: rec.created_at})
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise Busy("too many sessions are starting at once; retry", code="live_busy")

    def _check_slots(self, running: int) -> None:
        """Refuse a session no live worker could take: each serves a fixed number of sessions
        (its slots: LIVE_SESSIONS_PER_WORKER for a render worker, 4 x that for a speech
        worker) whatever their size."""
        for role in keys.LIVE_ROLES:
            workers, slots = live_capacity(self.conn, role)
            if running + 1 > slots:
                each = ("" if role == "visual" else "4 x ") + "LIVE_SESSIONS_PER_WORKER"
                raise Busy(f"the {workers} live {role} worker{'s' if workers != 1 else ''} "
                           f"running serve{'' if workers != 1 else 's'} at most {slots} "
                           f"sessions at once ({each} each), and {running} are running; close "
                           f"a session, start another live {role} worker, or try later",
                           code="live_capacity")

    def get(self, session_id: str) -> live.SessionRecord:
        rec = live.load(self.conn, session_id) if len(session_id) <= 64 else None
        if rec is None:
            raise NotFound(f"no live session with id {session_id[:64]!r} (it may have ended)",
                           code="session_not_found")
        return rec

    def list(self) -> list[live.SessionRecord]:
        return live.active(self.conn)

    def end(self, session_id: str) -> bool:
        return live.end(self.conn, session_id)
