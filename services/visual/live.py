"""`python -m services.visual.live`: the live-visual worker. For each live session it serves, it
draws the avatar with the session's renderer (services/visual/engines/live.py), paced to the
wall clock (idle life between lines, speech from the live-audio worker's sentences and the
pieces of audio lines), and encodes everything in-process into one continuous fragmented MP4
published, fragment by fragment, on the session's out stream.

With each fragment it keeps in Redis where the playback of the speech got (`Playback`), so that
a worker taking the session over (this one died) plays the rest of the line being spoken from
the sample the stream had reached, and the lines after it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from pydantic import BaseModel

from services.visual import avatar as avatar_analysis
from services.visual.engines.base import RenderSpec
from services.visual.engines.live import LiveRenderer, LiveRenderers
from services.visual.live_audio import AudioLine, estimated_visemes
from services.visual.live_encoder import FragmentEncoder, Piece
from services.visual.live_motion import LiveMotion, Scheduled, viseme_items
from shared import keys, live
from shared.errors import ConfigError, JayAvatarError
from shared.keys import text
from shared.layout import PORTRAIT
from shared.leases import Lease
from shared.live import stream_id
from shared.live_audio import STREAM_RATE
from shared.logs import configure_logging, job_context
from shared.persona import Feeling
from shared.phonemes import from_dicts
from shared.settings import Settings

logger = logging.getLogger(__name__)

SAMPLE_RATE = STREAM_RATE  # the stream's audio rate: Piper's, so speech is never resampled
RECORD_CHECK_S = 1.0
LATE_LOG_S = 0.2
BATCH_S = 0.5  # an audio line's estimated visemes (and caption updates) go out this often


@dataclass
class LineEvents:
    """What an audio line has yet to tell the client: its pieces arrive a few frames at a time,
    and their events go out in batches."""

    line: str
    caption_start: float
    items: list[list[Any]] = field(default_factory=list)
    last_name: str = ""
    sent_frame: int | None = None
    caption_end: float = 0.0


class Playback(BaseModel):
    """How far a session's speech has played: a worker taking the session over reads the speech
    stream again after `after`, `entry` (the first entry read then, if any) having played
    `into` samples; `line` is the line being spoken; pieces of lines started before `cut` (a
    stop) are dropped."""

    after: str = "0-0"
    entry: str | None = None
    into: int = 0
    line: str | None = None
    cut: str = "0-0"
    state: str = "idle"  # the client's (listening, thinking, idle)

    @classmethod
    def load(cls, raw: bytes | str | None) -> Playback:
        try:
            return cls.model_validate_json(raw) if raw else cls()
        except ValueError:
            return cls(after=text(raw or b"0-0"))  # an older worker's plain position


class VisualSession:
    """One session's stream: read commands and speech, draw, encode, publish; paced to the
    wall clock so the media time of each fragment is the time it leaves."""

    def __init__(self, conn: redis.Redis, settings: Settings, rec: live.SessionRecord,
                 held: Lease, stopping: threading.Event, renderer: LiveRenderer) -> None:
        from services.visual.face import FaceInfo

        self.conn, self.settings, self.rec = conn, settings, rec
        self.held, self.stopping = held, stopping
        self.ttl = settings.live_idle_timeout_s
        avatar_dir = settings.layout.avatar_dir(rec.avatar_id)
        for name in (PORTRAIT, "face.json"):  # into this host's cache from a remote store
            settings.layout.store.fetch(avatar_dir / name)
        portrait = avatar_analysis.load_rgb(avatar_dir / PORTRAIT)
        face = FaceInfo.from_json(json.loads((avatar_dir / "face.json").read_text()))
        spec = RenderSpec(fps=rec.fps, size=rec.size, aspect=rec.aspect, framing=rec.framing)
        rig = renderer.rig(portrait, face, spec)
        self.animation = rig.animation
        # the session's media clock: 0 at its first frame; a worker taking over continues it
        now = time.time()
        conn.set(keys.live_clock(rec.id), now, nx=True,
                 ex=int(self.ttl + live.STREAM_TTL_MARGIN_S))
        origin = float(text(conn.get(keys.live_clock(rec.id)) or now))
        self.offset_frames = max(0, round((now - origin) * rec.fps))
        self.motion = LiveMotion(rec.fps, SAMPLE_RATE, self.animation.mouth_width,
                                 rig.face_width, offset=self.offset_frames / rec.fps)
        self.encoder = FragmentEncoder(self.animation.width, self.animation.height, rec.fps,
                                       SAMPLE_RATE, settings.live_fragment_ms)
        saved = Playback.load(conn.get(keys.live_position(rec.id, "visual")))
        self.speech_pos = saved.after
        self.resume = (saved.entry, saved.into) if saved.entry else None
        last = conn.xrevrange(keys.live_ctl(rec.id), count=1)
        self.ctl_pos = text(last[0][0]) if last else "0-0"  # commands before now are history
        self.cut = saved.cut  # pieces of lines older than a stop are dropped
        self.stream_id = uuid.uuid4().hex  # tells a taken-over stream's init from a repeat
        self.want_key = False
        self.speaking: str | None = saved.line
        self.motion.persona.state = saved.state
        self.published_frame = 0  # the first frame of the newest fragment published
        self.audio_line: AudioLine | None = None  # the audio line whose pieces are arriving
        self.line_events: LineEvents | None = None
        self.closed = False
        self._checked = time.monotonic()

    def run(self) -> None:
        fps = self.rec.fps
        started = time.monotonic()
        frame = 0
        while not self._done():
            self._read()
            self._frame(frame)
            frame += 1
            due = started + frame / fps
            late = time.monotonic() - due
            if late < 0:
                time.sleep(-late)
            elif late > LATE_LOG_S:
                logger.warning("session %s: %.0f ms behind the wall clock at frame %d",
                               self.rec.id, 1000 * late, frame)
        self._publish(self.encoder.close())

    def _done(self) -> bool:
        if self.closed or self.stopping.is_set() or self.held.lost:
            return True
        now = time.monotonic()
        if now - self._checked > RECORD_CHECK_S:
            self._checked = now
            if not self.conn.exists(keys.live_session(self.rec.id)):
                return True
        return False

    def _read(self) -> None:
        reply: Any = self.conn.xread({keys.live_ctl(self.rec.id): self.ctl_pos,
                                 keys.live_speech(self.rec.id): self.speech_pos}, count=20)
        for raw_key, entries in reply or []:
            is_ctl = text(raw_key) == keys.live_ctl(self.rec.id)
            for raw_id, raw in entries:
                entry_id = text(raw_id)
                fields = {text(k): v for k, v in raw.items()}
                if is_ctl:
                    self.ctl_pos = entry_id
                    self._command(entry_id, text(fields.get("type", b"")), fields)
                else:
                    self.speech_pos = entry_id
                    self._speech(entry_id, fields)

    def _command(self, entry_id: str, kind: str, fields: dict[str, Any]) -> None:
        if kind == "state":
            self._state(text(fields.get("state", b"idle")))
        elif kind == "keyframe":
            self.want_key = True
        elif kind == "close":
            self.closed = True
        elif kind == "stop":
            self.cut = entry_id
            now = self.encoder.frames
            cut = self.motion.stop(now)
            self.audio_line = self.line_events = None
            lines = list(dict.fromkeys(p.line for p in cut))
            if self.speaking is not None and self.speaking not in lines:
                lines.insert(0, self.speaking)
            t = round(self.motion.media_time(now), 3)
            for line in lines:
                self._event({"type": "speech.end", "id": line, "media_time": t, "stopped": True})
            if self.speaking is not None or lines:
                self.speaking = None
                self._spoken(t)

    def _speech(self, entry_id: str, fields: dict[str, Any]) -> None:
        into = 0
        if self.resume is not None:  # the first entry read after a takeover
            entry, played = self.resume
            self.resume = None
            if entry == entry_id:
                into = played
            else:
                logger.warning("session %s: speech entry %s is no longer there; the line in "
                               "flight goes on with what comes", self.rec.id, entry)
        kind = text(fields.get("kind", b""))
        if kind not in ("piece", "audio"):
            return
        if stream_id(text(fields.get("ctl", b"0-0"))) < stream_id(self.cut):
            return  # a sentence of a line that was stopped
        if kind == "audio":
            self._audio_piece(entry_id, fields, into)
            return
        pcm = np.frombuffer(fields.get("pcm", b""), dtype="<i2")
        if not len(pcm):
            return
        now = self.encoder.frames
        phonemes = from_dicts(json.loads(text(fields.get("phonemes", b"null"))))
        # a sentence the stream was playing when its worker died: its frames played go before
        # this stream's first, and it goes on from the frame it had reached
        at = now - into * self.rec.fps // SAMPLE_RATE if into else None
        piece = self.motion.schedule(now, text(fields["line"]), int(text(fields["seq"])),
                                     text(fields.get("last", b"1")) == "1", pcm,
                                     int(text(fields.get("rate", SAMPLE_RATE))), phonemes,
                                     text(fields.get("text", b"")), at=at)
        piece.sources = [(entry_id, 0)]
        piece.feeling = Feeling.from_fields(fields)
        piece.events_sent = piece.events_sent or bool(into)

    def _audio_piece(self, entry_id: str, fields: dict[str, Any], into: int = 0) -> None:
        """A piece of an audio line (shared/live_audio.py), at the stream's rate (from its
        sample `into`: the ones before played in the stream of a worker that died)."""
        line_id, ctl = text(fields["line"]), text(fields["ctl"])
        seq, last = int(text(fields["seq"])), text(fields.get("last", b"0")) == "1"
        line = self.audio_line
        if line is None or line.line != line_id or line.ctl != ctl:
            line = self.audio_line = AudioLine(self.motion, line_id, ctl,
                                               text(fields.get("text", b"")),
                                               first=seq == 0 and not into)
        pcm = np.frombuffer(fields.get("pcm", b""), dtype="<i2")[into:]
        samples = pcm.astype(np.float32) / 32768
        now = self.encoder.frames
        placed = line.add(now, samples, last, entry_id, into)
        for piece in placed:
            piece.feeling = Feeling.from_fields(fields)
        if last and not placed and not line.finish(now) and self.speaking == line_id:
            # the end came after the line's audio had run out: it ends now
            t = round(self.motion.media_time(now), 3)
            self._event({"type": "speech.end", "id": line_id, "media_time": t})
            self.speaking = self.line_events = None
            if self.motion.playing(now) is None:
                self._spoken(t)
        if last:
            self.audio_line = None
            if line.dry:
                logger.info("session %s: audio line %s ran dry %d times (its audio came late); "
                            "buffer now %d frames; %d frames of its pauses dropped to catch up, "
                            "it ended %.0f ms later than sent", self.rec.id, line_id, line.dry,
                            line.buffer_frames, line.dropped,
                            1000 * line.late / self.motion.rate)

    def _frame(self, frame: int) -> None:
        self._events_at(frame)
        params, audio = self.motion.frame(frame)
        image = self.animation.draw(*params.astuple(), look=params.look, relax=params.relax)
        key, self.want_key = self.want_key, False
        self._publish(self.encoder.add(image, audio, key=key))

    def _events_at(self, frame: int) -> None:
        for p in list(self.motion.pieces):
            if p.start == frame and not p.events_sent:
                self._piece_events(p)
            if p.end == frame and p.last:
                self._event({"type": "speech.end", "id": p.line,
                             "media_time": round(self.motion.media_time(frame), 3)})
                if self.motion.playing(frame) is None:
                    self.speaking = None
                    self._spoken(round(self.motion.media_time(frame), 3))
        playing = self.motion.playing(frame)
        if playing is not None:
            self._feel(playing.feeling, round(self.motion.media_time(frame), 3))

    def _piece_events(self, p: Scheduled) -> None:
        p.events_sent = True
        start = round(self.motion.media_time(p.start), 3)
        end = round(self.motion.media_time(p.end), 3)
        if p.seq == 0:
            self._event({"type": "speech.start", "id": p.line, "media_time": start})
        if self.speaking is None:
            self._event({"type": "state", "state": "speaking", "media_time": start})
        self.speaking = p.line
        if p.streamed:
            self._line_events(p, start)
            return
        self._event({"type": "visemes", "id": p.line, "items": viseme_items(p.phonemes, start)})
        if p.text:
            self._event({"type": "caption", "id": p.line, "text": p.text, "start": start,
                         "end": end})

    def _line_events(self, p: Scheduled, start: float) -> None:
        """An audio line's estimated visemes and its caption (the transcript sent with its
        audio.start, re-sent with a later end as more of its audio arrives), in batches."""
        b = self.line_events
        if b is None or b.line != p.line:
            b = self.line_events = LineEvents(p.line, caption_start=start)
        for item in estimated_visemes(p, self.animation.mouth_width, start, self.rec.fps):
            if item[1] != b.last_name:
                b.items.append(item)
                b.last_name = item[1]
        if (b.sent_frame is not None and not p.last
                and p.start - b.sent_frame < BATCH_S * self.rec.fps):
            return
        b.sent_frame = p.start
        self._event({"type": "visemes", "id": p.line, "items": b.items, "estimated": True})
        b.items = []
        end = self.motion.media_time(max(q.end for q in self.motion.pieces if q.line == p.line))
        if p.text and end > b.caption_end:
            b.caption_end = end
            self._event({"type": "caption", "id": p.line, "text": p.text,
                         "start": b.caption_start, "end": round(end, 3)})

    def _state(self, state: str) -> None:
        """The client's state (checked by the relay): shown now, or after the line playing."""
        persona = self.motion.persona
        if state == persona.state:
            return
        persona.state = state
        if self.speaking is None:
            t = round(self.motion.media_time(self.encoder.frames), 3)
            self._event({"type": "state", "state": state, "media_time": t})

    def _spoken(self, t: float) -> None:
        """Speech is over: back to the client's state, and the face to neutral."""
        self._event({"type": "state", "state": self.motion.persona.state, "media_time": t})
        self._feel(Feeling(), t)

    def _feel(self, feeling: Feeling, t: float) -> None:
        if self.motion.persona.feel(feeling, t):
            self._event({"type": "emotion", "emotion": feeling.emotion,
                         "intensity": feeling.intensity, "media_time": t})

    def _event(self, event: dict[str, Any]) -> None:
        live.xadd(self.conn, keys.live_out(self.rec.id),
                  {"kind": "event", "data": json.dumps(event)}, live.OUT_MAXLEN, self.ttl)

    def _playback(self) -> Playback:
        """Where the speech has played to, at the first frame of the newest fragment sent (the
        fragments before it are out; what follows is played again by a worker taking over)."""
        at = None
        waiting = [p for p in self.motion.pieces if p.end > self.published_frame and p.sources]
        if waiting:
            p = min(waiting, key=lambda q: q.start)
            m = self.motion
            k = max(0, m.samples_of(self.published_frame)[0] - m.samples_of(p.start)[0])
            entry, begin = [s for s in p.sources if s[1] <= k][-1]
            at = (entry, k - begin)
        elif self.audio_line is not None:
            at = self.audio_line.unplaced()
        return Playback(after=live.before(at[0]) if at else self.speech_pos,
                        entry=at[0] if at else None, into=at[1] if at else 0,
                        line=self.speaking, cut=self.cut, state=self.motion.persona.state)

    def _publish(self, pieces: list[Piece]) -> None:
        if not pieces:
            return
        pipe = self.conn.pipeline(transaction=False)
        for piece in pieces:
            t = round(self.motion.offset + piece.t, 3)
            if piece.kind == "init":
                init: dict[Any, Any] = {  # redis-py types its mapping keys invariantly
                        "kind": "init", "data": piece.data, "mime": self.encoder.mime,
                        "width": self.animation.width, "height": self.animation.height,
                        "fps": self.rec.fps, "offset": round(self.motion.offset, 3),
                        "stream": self.stream_id}
                pipe.hset(keys.live_init(self.rec.id), mapping=init)
                pipe.expire(keys.live_init(self.rec.id), int(self.ttl + live.STREAM_TTL_MARGIN_S))
                live.xadd(pipe, keys.live_out(self.rec.id), init, live.OUT_MAXLEN, self.ttl)
            else:
                live.xadd(pipe, keys.live_out(self.rec.id), {"kind": "frag", "data": piece.data,
                                                        "t": t, "key": int(piece.key)},
                          live.OUT_MAXLEN, self.ttl)
                self.published_frame = round(piece.t * self.rec.fps)
        pipe.set(keys.live_position(self.rec.id, "visual"), self._playback().model_dump_json(),
                 ex=int(self.ttl + live.STREAM_TTL_MARGIN_S))
        pipe.execute()


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        sys.stderr.write(f"live-visual: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    conn = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=10)
    renderers = LiveRenderers(settings.models_dir)

    def serve(rec: live.SessionRecord, held: Lease, stopping: threading.Event) -> None:
        with job_context(rec.id, "live-visual"):
            try:
                session = VisualSession(conn, settings, rec, held, stopping,
                                        renderers.get(rec.renderer))
            except (OSError, ValueError, JayAvatarError) as exc:
                logger.warning("session %s: cannot start: %s", rec.id, exc)
                live.tell_error(conn, rec.id, f"the avatar cannot be animated: {exc}",
                                settings.live_idle_timeout_s)
                live.end(conn, rec.id)
                return
            session.run()

    worker = live.LiveWorker(conn, "visual", serve, ttl_s=settings.live_lease_ttl_s,
                             max_sessions=settings.live_sessions_per_worker)
    worker.run_until_signalled(nice=settings.live_nice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
