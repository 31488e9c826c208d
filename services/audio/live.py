"""`python -m services.audio.live`: the live-audio worker. For each live session it serves, it
reads the client's commands (`say`, `stop`, `close`, `audio.start`) from the session's ctl stream
and speaks each line with Piper one sentence at a time, publishing every sentence as soon as it
is ready (16-bit PCM + phoneme timings + the sentence's words) on the session's speech stream.
Audio lines (speech the client streams, shared/live_audio.py) take their turn among the lines:
their PCM, read from the audio_in stream, is resampled to the stream's rate and forwarded piece
by piece as it arrives.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis

from services.audio.engines.piper import PiperEngine
from services.audio.resample import Resampler, to_mono, to_pcm16
from shared import live
from shared.errors import ConfigError, JayAvatarError
from shared.keys import text
from shared.live_audio import STREAM_RATE, AudioIn, AudioStart
from shared.logs import configure_logging, job_context
from shared.settings import Settings

logger = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_RECORD_CHECK_S = 1.0
_SYNTH_LOCK = threading.Lock()
FIRST_SPLIT_WORDS = 8  # a first sentence this long is spoken clause first


def first_clause(line: str) -> list[str]:
    """The line, with a long first sentence's opening clause split off at its first comma:
    Piper's time to the first sound grows with the sentence, and a clause is spoken sooner."""
    line = line.strip()
    first = _SENTENCE_END.split(line, maxsplit=1)[0]
    comma = first.find(", ")
    if len(first.split()) < FIRST_SPLIT_WORDS or comma < 0 or len(first[:comma].split()) < 2:
        return [line]
    return [line[:comma + 1], line[comma + 2:]]


def split_sentences(line: str, count: int) -> list[str]:
    """The words of each of Piper's `count` sentences, for captions: the line split after
    sentence punctuation when that gives `count` parts, else the whole line on the first."""
    parts = [p for p in _SENTENCE_END.split(line.strip()) if p]
    if len(parts) == count:
        return parts
    return [line.strip()] + [""] * max(0, count - 1)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms or 0), int(seq or 0)


@dataclass
class AudioLine:
    """An audio line's PCM as it arrives, until it is forwarded."""

    start: AudioStart
    resampler: Resampler
    pending: list[bytes] = field(default_factory=list)
    ended: bool = False
    seq: int = 0

    @property
    def ready(self) -> bool:
        return bool(self.pending) or self.ended


class AudioSession:
    """One session's speech: a queue of lines (text to speak, or audio lines to forward), in
    the order they came, cut by `stop`."""

    def __init__(self, conn: redis.Redis, engine: PiperEngine, settings: Settings,
                 rec: live.SessionRecord, held: live.Lease, stopping: threading.Event) -> None:
        self.conn, self.engine, self.settings = conn, engine, settings
        self.rec, self.held, self.stopping = rec, held, stopping
        self.ttl = settings.live_idle_timeout_s
        pos, audio_pos = conn.mget([live.position(rec.id, "audio"),
                                    live.position(rec.id, "audio_in")])
        self.pos = text(pos) if pos else "0-0"
        self.audio_pos = text(audio_pos) if audio_pos else "0-0"
        self.queue: deque[tuple[str, dict[str, str]]] = deque()
        self.lines: dict[str, AudioLine] = {}  # audio lines by the ctl id of their start
        self.cut_before: tuple[int, int] = (0, 0)  # audio of lines started before a stop: dropped
        self.closed = False
        self._checked = time.monotonic()

    def run(self) -> None:
        while not self._done():
            self._read(block_ms=0 if self._has_work() else 200)
            if self.queue and not self._done():
                ctl_id, command = self.queue[0]
                if command.get("type") == "say":
                    self.queue.popleft()
                    self._speak(ctl_id, command)
                elif self._has_work():
                    self._forward(ctl_id)

    def _has_work(self) -> bool:
        """True if the line at the head of the queue can be worked on now."""
        if not self.queue:
            return False
        ctl_id, command = self.queue[0]
        return command.get("type") == "say" or self.lines[ctl_id].ready

    def _done(self) -> bool:
        if self.closed or self.stopping.is_set() or self.held.lost:
            return True
        now = time.monotonic()
        if now - self._checked > _RECORD_CHECK_S:
            self._checked = now
            if not self.conn.exists(live.session(self.rec.id)):
                return True
        return False

    def _read(self, block_ms: int) -> bool:
        """Take new commands from the ctl stream and audio from the audio_in stream (commands
        first: a line's start comes before its audio); True if a stop or close came."""
        ctl_key, audio_key = live.ctl(self.rec.id), live.audio_in(self.rec.id)
        reply: Any = self.conn.xread({ctl_key: self.pos, audio_key: self.audio_pos}, count=100,
                                     block=block_ms or None)
        streams = {text(key): entries for key, entries in reply or []}
        cut = False
        for raw_id, raw in streams.get(ctl_key, []):
            self.pos = text(raw_id)
            fields = {text(k): text(v) for k, v in raw.items()}
            kind = fields.get("type")
            if kind == "say":
                self.queue.append((self.pos, fields))
            elif kind == "audio.start":
                self._audio_start(self.pos, fields)
            elif kind == "stop":
                self.queue.clear()
                self.cut_before = _stream_id(self.pos)
                self.lines = {k: v for k, v in self.lines.items()
                              if _stream_id(k) > self.cut_before}  # early audio of later lines
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
            self._audio_in(entry)
        if reply:
            ex = int(self.ttl + live.STREAM_TTL_MARGIN_S)
            pipe = self.conn.pipeline(transaction=False)
            pipe.set(live.position(self.rec.id, "audio"), self.pos, ex=ex)
            if audio_key in streams:  # what was read is held here: the stream need not keep it
                pipe.set(live.position(self.rec.id, "audio_in"), self.audio_pos, ex=ex)
                pipe.xtrim(audio_key, minid=self.audio_pos, approximate=False)
            pipe.execute()
        return cut

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
            self.lines[ctl_id] = AudioLine(start, Resampler(start.rate, STREAM_RATE))
        self.queue.append((ctl_id, fields))

    def _audio_in(self, entry: AudioIn) -> None:
        if _stream_id(entry.ctl) < self.cut_before:
            return  # audio of a line that was stopped
        line = self.lines.get(entry.ctl)
        if line is None:
            start = AudioStart(id=entry.line, rate=entry.rate, channels=entry.channels)
            line = self.lines[entry.ctl] = AudioLine(start, Resampler(entry.rate, STREAM_RATE))
            if _stream_id(entry.ctl) <= _stream_id(self.pos):  # a worker that died read its
                self.queue.append((entry.ctl, {"type": "audio.start"}))  # start: carry it on
        if entry.kind == "end":
            line.ended = True
        elif entry.pcm:
            line.pending.append(entry.pcm)

    def _forward(self, ctl_id: str) -> None:
        """Forward what has arrived of the audio line at the head of the queue, resampled."""
        line = self.lines[ctl_id]
        pcm = b"".join(line.pending)
        line.pending.clear()
        samples = line.resampler.process(to_mono(pcm, line.start.channels), final=line.ended)
        if len(samples) or line.ended:
            live.xadd(self.conn, live.speech(self.rec.id), {
                "kind": "audio", "ctl": ctl_id, "line": line.start.id, "seq": line.seq,
                "last": int(line.ended), "rate": STREAM_RATE, "pcm": to_pcm16(samples),
                "text": line.start.text if line.seq == 0 else ""},
                live.SPEECH_MAXLEN, self.ttl)
            line.seq += 1
        if line.ended:
            self.queue.popleft()
            del self.lines[ctl_id]

    def _speak(self, ctl_id: str, say: dict[str, str]) -> None:
        line, line_id = say.get("text", ""), say.get("id", ctl_id)
        t0 = time.monotonic()
        try:
            with _SYNTH_LOCK:  # espeak-ng's phonemizer is one global per process
                parts = [(part, self.engine.sentence_count(part)) for part in first_clause(line)]
            total, seq = sum(count for _, count in parts), 0
            for part, count in parts:
                words = split_sentences(part, count)
                pieces = self.engine.sentences(part)
                for k in range(count):
                    with _SYNTH_LOCK:
                        piece = next(pieces, None)
                    if piece is None:
                        break
                    last = seq >= total - 1
                    self._publish(ctl_id, line_id, seq, last, piece, words[k])
                    if seq == 0:
                        logger.info("session %s: line %s first sentence ready in %.0f ms",
                                    self.rec.id, line_id, 1000 * (time.monotonic() - t0))
                    seq += 1
                    if last or self._read(block_ms=0) or self._done():
                        return  # a stop: the visual side drops what it has of this line
        except JayAvatarError as exc:
            logger.warning("session %s: cannot speak line %s: %s", self.rec.id, line_id, exc)
            live.xadd(self.conn, live.out(self.rec.id), {"kind": "event", "data": json.dumps(
                {"type": "error", "message": f"line {line_id!r} could not be spoken: {exc}"})},
                live.OUT_MAXLEN, self.ttl)

    def _publish(self, ctl_id: str, line_id: str, seq: int, last: bool,
                 piece: tuple[bytes, list[dict[str, Any]] | None], words: str) -> None:
        pcm, phonemes = piece
        live.xadd(self.conn, live.speech(self.rec.id), {
            "kind": "piece", "ctl": ctl_id, "line": line_id, "seq": seq, "last": int(last),
            "rate": self.engine.sample_rate, "pcm": pcm, "phonemes": json.dumps(phonemes),
            "text": words}, live.SPEECH_MAXLEN, self.ttl)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.load()
    except ConfigError as exc:
        sys.stderr.write(f"live-audio: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    engine = PiperEngine(settings.models_dir)
    engine.single_threaded()
    with _SYNTH_LOCK:  # the first sentence of a process is slow (onnxruntime warm-up)
        list(engine.sentences("Ready."))
    conn = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=10)

    def serve(rec: live.SessionRecord, held: live.Lease, stopping: threading.Event) -> None:
        with job_context(rec.id, "live-audio"):
            AudioSession(conn, engine, settings, rec, held, stopping).run()

    worker = live.LiveWorker(conn, "audio", serve, ttl_s=settings.live_lease_ttl_s,
                             max_sessions=settings.live_sessions_per_worker * 4)
    worker.run_until_signalled(nice=settings.live_nice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
