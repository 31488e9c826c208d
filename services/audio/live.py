"""`python -m services.audio.live`: the live-audio worker. For each live session it serves, it
reads the client's commands (`say`, `stop`, `close`, `audio.start`) from the session's ctl stream
and speaks each line with the session's voice (services/audio/engines/live.py) one sentence
at a time, publishing every sentence as soon as it is ready (16-bit PCM + phoneme timings + the
sentence's words) on the session's speech stream.
Audio lines (speech the client streams, shared/live_audio.py) take their turn among the lines:
their PCM, read from the audio_in stream, is resampled to the stream's rate and forwarded piece
by piece as it arrives. The sessions take turns on the voices (services/audio/live_voice.py).

What a session has done is kept in Redis so that a worker taking it over (this one died) goes
on where it stopped: the ctl position is the last entry before the first line not yet over, the
audio_in position the last entry before the oldest PCM not yet forwarded, and the newest piece
on the speech stream says how far the line being spoken got (its `seq`, the `opening` its
sentences were cut with, the audio_in entries it covers); lines queued behind it are read again.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis

from services.audio import prosody
from services.audio.engines.live import AUTO, LiveVoice, LiveVoices
from services.audio.live_voice import Turns, line_parts, opening_words, split_sentences
from services.audio.resample import Resampler, to_mono, to_pcm16
from shared import keys, live, persona
from shared.errors import ConfigError, JayAvatarError
from shared.keys import text
from shared.leases import Lease
from shared.live import stream_id
from shared.live_audio import STREAM_RATE, AudioIn, AudioStart
from shared.logs import configure_logging, job_context
from shared.persona import Feeling
from shared.phonemes import SILENCE, Phoneme, to_dicts
from shared.settings import Settings

logger = logging.getLogger(__name__)

_RECORD_CHECK_S = 1.0
START_S = 0.1  # a piece published now starts playing this much later at the soonest


@dataclass
class Line:
    """A line in a session's queue: its ctl entry, and when this worker read it."""

    ctl: str
    fields: dict[str, str]
    arrived: float  # time.monotonic()


@dataclass
class AudioLine:
    """An audio line's PCM as it arrives, until it is forwarded."""

    start: AudioStart
    resampler: Resampler
    pending: list[tuple[str, bytes]] = field(default_factory=list)  # (audio_in id, PCM)
    ended: bool = False
    seq: int = 0
    upto: str = "0-0"  # the newest audio_in entry forwarded

    @property
    def ready(self) -> bool:
        return bool(self.pending) or self.ended


@dataclass(frozen=True)
class _Part:
    """What a text line is spoken in: words (`spoken`, shown as `shown`) in `count` sentences,
    or a break of `pause_s` (no words), with the feeling of its segment."""

    spoken: str
    shown: str
    count: int
    feeling: Feeling
    pause_s: float = 0.0


@dataclass
class _Said:
    """A text line being spoken: its ctl entry and id, opening words, pieces and start."""

    ctl: str
    line_id: str
    opening: int
    t0: float
    total: int = 0


@dataclass(frozen=True)
class Published:
    """The newest piece on a session's speech stream: how far its line got."""

    ctl: str
    seq: int
    last: bool
    opening: int  # the words a text line's first part had (live_voice.line_parts)
    upto: str  # an audio line's newest audio_in entry forwarded

    @classmethod
    def newest(cls, conn: redis.Redis, session_id: str) -> Published | None:
        entries: Any = conn.xrevrange(keys.live_speech(session_id), count=1)
        if not entries:
            return None
        fields = {text(k): v for k, v in entries[0][1].items()}
        return cls(ctl=text(fields.get("ctl", b"0-0")), seq=int(text(fields.get("seq", b"0"))),
                   last=text(fields.get("last", b"1")) == "1",
                   opening=int(text(fields.get("opening", b"0"))),
                   upto=text(fields.get("upto", b"0-0")))


class AudioSession:
    """One session's speech: a queue of lines (text to speak, or audio lines to forward), in
    the order they came, cut by `stop`."""

    def __init__(self, conn: redis.Redis, voice: LiveVoice, settings: Settings,
                 rec: live.SessionRecord, held: Lease, stopping: threading.Event,
                 turns: Turns | None = None) -> None:
        self.conn, self.voice, self.settings = conn, voice, settings
        self.rec, self.held, self.stopping = rec, held, stopping
        self.turns = turns or Turns()
        self.ttl = settings.live_idle_timeout_s
        pos, audio_pos = conn.mget([keys.live_position(rec.id, "audio"),
                                    keys.live_position(rec.id, "audio_in")])
        self.pos = text(pos) if pos else "0-0"
        self.audio_pos = text(audio_pos) if audio_pos else "0-0"
        self.queue: deque[Line] = deque()
        self.lines: dict[str, AudioLine] = {}  # audio lines by the ctl id of their start
        # lines started before this are over (spoken, forwarded or stopped): their audio is dropped
        ms, seq = stream_id(self.pos)
        self.cut_before: tuple[int, int] = (ms, seq + 1)
        self.resume = Published.newest(conn, rec.id)  # the line a worker before this one spoke
        if self.resume is not None:
            ms, seq = stream_id(self.resume.ctl)
            self.cut_before = max(self.cut_before, (ms, seq + self.resume.last))
            if self.resume.last or stream_id(self.resume.ctl) < self.cut_before:
                self.resume = None
            else:
                logger.info("session %s: going on with line %s from its piece %d",
                            rec.id, self.resume.ctl, self.resume.seq + 1)
        self.play_end = 0.0  # time.monotonic() when the audio published so far has played
        self._deadline = 0.0  # the turn on the voice of the line being spoken
        self.closed = False
        self._saved: tuple[str, str] = (self.pos, self.audio_pos)
        self._checked = time.monotonic()

    def run(self) -> None:
        with self.turns.session():
            while not self._done():
                self._read(block_ms=0 if self._has_work() else 200)
                if self.queue and not self._done():
                    line = self.queue[0]
                    if line.fields.get("type") == "say":
                        self._speak(line)
                        if self.queue and self.queue[0] is line:  # not dropped by a stop
                            self.queue.popleft()
                    elif self._has_work():
                        self._forward(line)
                self._save()

    def _has_work(self) -> bool:
        """True if the line at the head of the queue can be worked on now."""
        if not self.queue:
            return False
        line = self.queue[0]
        return line.fields.get("type") == "say" or self.lines[line.ctl].ready

    def _done(self) -> bool:
        if self.closed or self.stopping.is_set() or self.held.lost:
            return True
        now = time.monotonic()
        if now - self._checked > _RECORD_CHECK_S:
            self._checked = now
            if not self.conn.exists(keys.live_session(self.rec.id)):
                return True
        return False

    def _read(self, block_ms: int) -> bool:
        """Take new commands from the ctl stream and audio from the audio_in stream (commands
        first: a line's start comes before its audio); True if a stop or close came."""
        ctl_key, audio_key = keys.live_ctl(self.rec.id), keys.live_audio_in(self.rec.id)
        reply: Any = self.conn.xread({ctl_key: self.pos, audio_key: self.audio_pos}, count=100,
                                     block=block_ms or None)
        streams = {text(key): entries for key, entries in reply or []}
        cut = False
        for raw_id, raw in streams.get(ctl_key, []):
            self.pos = text(raw_id)
            fields = {text(k): text(v) for k, v in raw.items()}
            kind = fields.get("type")
            if kind in ("say", "audio.start") and stream_id(self.pos) < self.cut_before:
                continue  # a line a worker before this one finished
            if kind == "say":
                self.queue.append(Line(self.pos, fields, time.monotonic()))
            elif kind == "audio.start":
                self._audio_start(self.pos, fields)
            elif kind == "stop":
                self.queue.clear()
                self.cut_before = stream_id(self.pos)
                self.lines = {k: v for k, v in self.lines.items()
                              if stream_id(k) > self.cut_before}  # early audio of later lines
                self.play_end = 0.0
                cut = True
            elif kind == "close":
                self.closed = cut = True
        for raw_id, raw in streams.get(audio_key, []):
            self.audio_pos = text(raw_id)
            try:
                entry = AudioIn.from_fields(raw)
            except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                logger.warning("session %s: audio_in entry %s is not audio (%r); skipped",
                               self.rec.id, self.audio_pos, exc)
                continue
            self._audio_in(self.audio_pos, entry)
        self._save()
        return cut

    def _save(self) -> None:
        """Keep where a worker taking the session over goes on (the module's docstring), and
        trim from the audio_in stream what no worker will read again."""
        done = live.before(self.queue[0].ctl) if self.queue else self.pos
        held = [entry for line in self.lines.values() for entry, _ in line.pending]
        oldest = min(held, key=stream_id) if held else None
        audio_done = live.before(oldest) if oldest else self.audio_pos
        if (done, audio_done) == self._saved:
            return
        ex = int(self.ttl + live.STREAM_TTL_MARGIN_S)
        pipe = self.conn.pipeline(transaction=False)
        pipe.set(keys.live_position(self.rec.id, "audio"), done, ex=ex)
        if audio_done != self._saved[1]:
            pipe.set(keys.live_position(self.rec.id, "audio_in"), audio_done, ex=ex)
            pipe.xtrim(keys.live_audio_in(self.rec.id), minid=oldest or self.audio_pos,
                       approximate=False)
        pipe.execute()
        self._saved = (done, audio_done)

    def _new_line(self, ctl_id: str, start: AudioStart) -> AudioLine:
        line = AudioLine(start, Resampler(start.rate, STREAM_RATE))
        if self.resume is not None and self.resume.ctl == ctl_id:  # a worker before forwarded
            line.seq, line.upto = self.resume.seq + 1, self.resume.upto  # its start
        self.lines[ctl_id] = line
        return line

    def _audio_start(self, ctl_id: str, fields: dict[str, str]) -> None:
        try:
            start = AudioStart.from_fields(fields)
        except (KeyError, ValueError) as exc:
            logger.warning("session %s: ctl entry %s is not an audio line (%r); skipped",
                           self.rec.id, ctl_id, exc)
            return
        early = self.lines.get(ctl_id)  # audio that was read before its start
        if early is not None:
            early.start = start
        else:
            self._new_line(ctl_id, start)
        self.queue.append(Line(ctl_id, fields, time.monotonic()))

    def _start_of(self, entry: AudioIn) -> AudioStart:
        """A line whose audio came before (or, after a takeover, without) its audio.start: what
        its audio names, with the emotion its start entry on the ctl stream gives, if there."""
        start = AudioStart(id=entry.line, rate=entry.rate, channels=entry.channels)
        found: Any = self.conn.xrange(keys.live_ctl(self.rec.id), entry.ctl, entry.ctl)
        if found:
            try:
                said = AudioStart.from_fields(dict(found[0][1]))
            except (KeyError, ValueError):
                return start
            return start.model_copy(update={"emotion": said.emotion,
                                            "intensity": said.intensity})
        return start

    def _audio_in(self, entry_id: str, entry: AudioIn) -> None:
        if stream_id(entry.ctl) < self.cut_before:
            return  # audio of a line that was stopped or is over
        line = self.lines.get(entry.ctl)
        if line is None:
            line = self._new_line(entry.ctl, self._start_of(entry))
        if stream_id(entry_id) <= stream_id(line.upto):
            return  # forwarded by a worker before this one
        if entry.kind == "end":
            line.ended = True
        line.pending.append((entry_id, entry.pcm))

    def _forward(self, head: Line) -> None:
        """Forward what has arrived of the audio line at the head of the queue, resampled."""
        line = self.lines[head.ctl]
        pcm = b"".join(pcm for _, pcm in line.pending)
        upto = line.pending[-1][0] if line.pending else line.upto
        line.pending.clear()
        samples = line.resampler.process(to_mono(pcm, line.start.channels), final=line.ended)
        if len(samples) or line.ended:
            live.xadd(self.conn, keys.live_speech(self.rec.id), {
                "kind": "audio", "ctl": head.ctl, "line": line.start.id, "seq": line.seq,
                "last": int(line.ended), "rate": STREAM_RATE, "pcm": to_pcm16(samples),
                "text": line.start.text if line.seq == 0 else "", "upto": upto,
                **line.start.feeling.fields()},
                live.SPEECH_MAXLEN, self.ttl)
            line.seq, line.upto = line.seq + 1, upto
            self._played(len(samples), STREAM_RATE)
        if line.ended:
            self.queue.popleft()
            del self.lines[head.ctl]

    def _played(self, samples: int, rate: int) -> None:
        """Audio was published: when all of it will have played."""
        self.play_end = max(self.play_end, time.monotonic() + START_S) + samples / rate

    def _speak(self, line: Line) -> None:
        """Speak a text line segment by segment (its emotion markers and breaks), part by part,
        sentence by sentence, taking turns on the voice; from where a worker before this one
        stopped, if it was speaking this line."""
        said, line_id = line.fields.get("text", ""), line.fields.get("id", line.ctl)
        resume = self.resume if self.resume is not None and self.resume.ctl == line.ctl else None
        self.resume = None
        segments = persona.segments(said, Feeling.from_fields(line.fields))[0]
        words = next((s.text for s in segments if s.text), "")
        opening = resume.opening if resume else opening_words(words, self.turns.shared)
        first = resume.seq + 1 if resume else 0
        self._deadline = max(line.arrived, self.play_end)
        said_line = _Said(line.ctl, line_id, opening, time.monotonic())
        try:
            with self.turns.turn(self._deadline):  # a voice's text front end is one per process
                parts = self._parts(segments, opening)
            said_line.total, seq = sum(p.count for p in parts), 0
            voiced = max((k for k, p in enumerate(parts) if p.spoken), default=-1)
            for number, part in enumerate(parts):
                skip = min(part.count, max(0, first - seq))
                if self._say_part(said_line, part, seq, skip, release=number == voiced):
                    return  # the line is over, or a stop: the visual side drops what it has
                seq += part.count
        except JayAvatarError as exc:
            logger.warning("session %s: cannot speak line %s: %s", self.rec.id, line_id, exc)
            live.tell_error(self.conn, self.rec.id,
                            f"line {line_id!r} could not be spoken: {exc}", self.ttl)

    def _parts(self, segments: list[persona.Segment], opening: int) -> list[_Part]:
        """Each segment's pause (a break) and its parts (live_voice.line_parts: the line's first
        `opening` words are a part of their own), with the voice's sentence count of each."""
        parts: list[_Part] = []
        for seg in segments:
            if seg.pause_s > 0:
                parts.append(_Part("", "", 1, seg.feeling, seg.pause_s))
            if seg.text:
                for spoken, shown in line_parts(seg.text, opening):
                    parts.append(_Part(spoken, shown, self.voice.sentence_count(spoken),
                                       seg.feeling))
                opening = 0  # only the line's first words open it
        return parts

    def _say_part(self, said: _Said, part: _Part, seq: int, skip: int, release: bool) -> bool:
        """Speak the sentences of `part` after its first `skip` as pieces `seq + k`; True when
        the line is over or was stopped."""
        if not part.spoken:  # a break: silence
            n = round(part.pause_s * self.voice.sample_rate)
            silence = [Phoneme(SILENCE, 0.0, round(n / self.voice.sample_rate, 5))]
            return not skip and self._put(said, seq, (bytes(2 * n), silence), "", part.feeling)
        words = split_sentences(part.shown, part.count)
        pieces = self.voice.sentences(part.spoken, skip=skip, release=release)
        try:
            for k in range(skip, part.count):
                with self.turns.turn(self._deadline):
                    piece = next(pieces, None)
                if piece is None:
                    break
                shaped = prosody.shape(piece[0], self.voice.sample_rate, piece[1], part.feeling)
                if self._put(said, seq + k, shaped, words[k], part.feeling):
                    return True
        finally:
            if release:
                with self.turns.turn(time.monotonic()):
                    pieces.close()  # the voice gives the memory of the line back
            else:
                pieces.close()
        return False

    def _put(self, said: _Said, n: int, piece: tuple[bytes, list[Phoneme] | None], words: str,
             feeling: Feeling) -> bool:
        """Publish piece `n` of a line; True when it was the last or a stop or close came."""
        last = n >= said.total - 1
        self._publish(said.ctl, said.line_id, n, last, said.opening, piece, words, feeling)
        self._deadline = self.play_end
        if n == 0:
            logger.info("session %s: line %s first sentence ready in %.0f ms",
                        self.rec.id, said.line_id, 1000 * (time.monotonic() - said.t0))
        return last or self._read(block_ms=0) or self._done()

    def _publish(self, ctl_id: str, line_id: str, seq: int, last: bool, opening: int,
                 piece: tuple[bytes, list[Phoneme] | None], words: str,
                 feeling: Feeling) -> None:
        pcm, phonemes = piece
        live.xadd(self.conn, keys.live_speech(self.rec.id), {
            "kind": "piece", "ctl": ctl_id, "line": line_id, "seq": seq, "last": int(last),
            "opening": opening, "rate": self.voice.sample_rate, "pcm": pcm,
            "phonemes": json.dumps(to_dicts(phonemes)), "text": words, **feeling.fields()},
            live.SPEECH_MAXLEN, self.ttl)
        self._played(len(pcm) // 2, self.voice.sample_rate)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        sys.stderr.write(f"live-audio: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    voices = LiveVoices(settings.models_dir)
    voices.get(AUTO)  # built and warmed before the first session comes
    conn = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=10)
    turns = Turns()

    def serve(rec: live.SessionRecord, held: Lease, stopping: threading.Event) -> None:
        with job_context(rec.id, "live-audio"):
            try:
                voice = voices.get(rec.voice)
            except (OSError, JayAvatarError) as exc:
                logger.warning("session %s: cannot start: %s", rec.id, exc)
                live.tell_error(conn, rec.id, f"voice {rec.voice!r} cannot speak: {exc}",
                                settings.live_idle_timeout_s)
                live.end(conn, rec.id)
                return
            AudioSession(conn, voice, settings, rec, held, stopping, turns).run()

    worker = live.LiveWorker(conn, "audio", serve, ttl_s=settings.live_lease_ttl_s,
                             max_sessions=settings.live_sessions_per_worker * 4)
    worker.run_until_signalled(nice=settings.live_nice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
