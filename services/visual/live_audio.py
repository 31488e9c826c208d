"""Audio lines on the live timeline: speech the client streams (shared/live_audio.py) arrives
here as pieces of any length, as fast or as slowly as the client sends it. Their samples are
placed in whole frames, back to back while the audio keeps up, so the line is heard exactly as
sent. A line starts a buffer's length after its audio arrived (the jitter its pieces may have:
BUFFER_S at first); when its audio runs dry before the line ends, the frames until more comes
show idle life, and the buffer grows by a frame, up to MAX_BUFFER_S (an adaptive jitter buffer),
to shrink again by a frame after each CALM_S of audio that never ran dry. The idle frames a line
waited would make the rest of it play later and later than it was sent over a long line: they
are taken back from its pauses (a frame of silence dropped once a pause has lasted PAUSE_FRAMES)
until it is no later than its buffer's growth.

The mouth follows the loudness and spectrum, through the batch clip's own language-agnostic path
(`build_tracks(..., phonemes=None, ...)`), computed over the line's preceding frames too, so that
its smoothing sees no seam where one piece ends and the next begins. What comes next is not
known yet, so the head's motion energy, which a batch clip lets anticipate speech, builds up and
calms down at most ENERGY_STEP a frame instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.visual.live_motion import LiveMotion, Scheduled
from services.visual.motion import audio_features, build_tracks, motion_energy

BUFFER_S = 0.08  # how long a line's first audio waits to play (at least a frame): what pieces
# sent at real time need on a busy 2-core machine to leave no gaps (README, Live sessions)
MAX_BUFFER_S = 0.2  # ... after its audio ran dry a few times
CONTEXT_FRAMES = 12  # frames of the line before a piece that its features are computed over
FUTURE_FRAMES = 14  # frames assumed to repeat a piece's last loudness (motion looks ~0.4 s on)
ENERGY_STEP = 0.15  # most the motion energy (0..1) changes from one frame to the next
CALM_S = 20.0  # audio that played without running dry, after which the buffer shrinks a frame
SILENT_RMS = 0.005  # a frame this quiet (-46 dBFS) is silence ...
PAUSE_FRAMES = 3  # ... and after this many of them a frame of a pause may be dropped


class AudioLine:
    """One audio line of a live stream, from its first piece to its last."""

    def __init__(self, motion: LiveMotion, line: str, ctl: str, words: str,
                 first: bool) -> None:
        self.motion, self.line, self.ctl, self.words = motion, line, ctl, words
        self.pending = np.zeros(0, np.float32)  # samples not yet placed (less than a frame)
        self.history = np.zeros(0, np.float32)  # the line's audio just before `next_frame`
        self.next_frame: int | None = None  # the frame after its last placed one
        self.seq = 0 if first else 1  # seq 0 sends speech.start (not after a takeover)
        self.ended = False
        self.buffer_frames = self.least_buffer = max(1, round(BUFFER_S * motion.fps))
        self.dry = 0  # times the line's audio ran out before its end
        self.late = 0  # samples it plays later than sent: idle frames waited, less frames dropped
        self.dropped = 0  # frames of pauses dropped to catch up
        self.calm = 0  # samples placed since its audio last ran dry
        self.quiet = 0  # silent frames just placed (or dropped) in a row
        self.energy = 0.0  # of its last placed frame (0 in the idle frames before it)
        self.marks: list[tuple[str, int]] = []  # (speech entry, the line's sample it begins at)
        self.received = 0  # samples of the line received
        self.taken = 0  # ... and placed

    def add(self, now: int, samples: np.ndarray, last: bool, entry: str = "",
            into: int = 0) -> list[Scheduled]:
        """Place what can be placed of the line's audio so far (all of it when `last`), with
        frame `now` the next one to be drawn; the pieces placed. `samples` are speech entry
        `entry`'s from its sample `into` on."""
        if entry:
            self.marks.append((entry, self.received - into))
        self.received += len(samples)
        self.pending = np.concatenate([self.pending, samples.astype(np.float32)])
        self.ended = self.ended or last
        m = self.motion
        dry_from = None
        if self.next_frame is not None and self.next_frame < now:  # ran dry: buffer more
            self.dry += 1
            self.buffer_frames = min(self.buffer_frames + 1,
                                     max(1, round(MAX_BUFFER_S * m.fps)))
            dry_from, self.next_frame, self.calm = self.next_frame, None, 0
        if self.next_frame is None:  # (re)starts after a buffer, with silence before it
            start = max(now + self.buffer_frames, m.busy_until)
            if dry_from is not None:
                self.late += m.samples_of(start)[0] - m.samples_of(dry_from)[0]
            lead = m.samples_of(start)[0] - m.samples_of(start - CONTEXT_FRAMES)[0]
            self.history = np.zeros(lead, np.float32)
            self.energy = 0.0
        else:
            start = self.next_frame
        self._catch_up(start)
        a0 = m.samples_of(start)[0]
        k = int(len(self.pending) * m.fps // m.rate) + 1
        while k > 0 and m.samples_of(start + k)[0] - a0 > len(self.pending):
            k -= 1
        if last and m.samples_of(start + k)[0] - a0 < len(self.pending):
            k += 1  # the rest, padded with silence to a whole frame
        if k == 0:
            return []
        take = m.samples_of(start + k)[0] - a0
        audio = np.zeros(take, np.float32)
        audio[:min(take, len(self.pending))] = self.pending[:take]
        self.pending = self.pending[take:]
        piece = self._piece(start, k, audio, last)
        piece.sources = self._sources(take)
        keep = a0 + take - m.samples_of(start + k - CONTEXT_FRAMES)[0]
        self.history = np.concatenate([self.history, audio])[-keep:]
        for f in range(start, start + k):
            a, b = m.samples_of(f)
            self.quiet = self.quiet + 1 if _silent(audio[a - a0:b - a0]) else 0
        self.calm += take
        if self.calm >= CALM_S * m.rate and self.buffer_frames > self.least_buffer:
            self.buffer_frames, self.calm = self.buffer_frames - 1, 0
        self.next_frame = start + k
        self.seq += 1
        return [m.place(piece, audio)]

    def _catch_up(self, frame: int) -> None:
        """Drop silent frames from the front of what waits, while the line plays later than
        sent by more than its buffer grew and a pause has lasted PAUSE_FRAMES."""
        m = self.motion
        allowed = (self.buffer_frames - self.least_buffer) * m.rate // m.fps
        while True:
            a, b = m.samples_of(frame)
            n = b - a
            if (self.late < allowed + n or len(self.pending) < n or self.quiet < PAUSE_FRAMES
                    or not _silent(self.pending[:n])):
                return
            self.pending = self.pending[n:]
            self.taken += n  # consumed, as if placed (see _sources)
            self.late -= n
            self.dropped += 1

    def _sources(self, take: int) -> list[tuple[str, int]]:
        """The entries of the line's next `take` samples (Scheduled.sources), now placed."""
        lo, hi = self.taken, self.taken + take
        ends = [begin for _, begin in self.marks[1:]] + [self.received] * bool(self.marks)
        out = [(entry, begin - lo) for (entry, begin), end in zip(self.marks, ends, strict=True)
               if begin < hi and end > lo]
        while len(self.marks) > 1 and self.marks[1][1] <= hi:
            self.marks.pop(0)
        self.taken = hi
        return out

    def unplaced(self) -> tuple[str, int] | None:
        """The entry holding the line's first sample not placed yet, and that sample's place
        in it; None if all are placed."""
        if self.received <= self.taken or not self.marks:
            return None
        placed = [m for m in self.marks if m[1] <= self.taken]
        entry, begin = placed[-1] if placed else self.marks[0]
        return entry, max(0, self.taken - begin)

    def finish(self, now: int) -> bool:
        """The line's end came with no audio to place: mark its last waiting piece last; False
        if none is left to play (its speech.end is due now)."""
        self.ended = True
        waiting = [p for p in self.motion.pieces if p.line == self.line and p.end >= now]
        if waiting:
            waiting[-1].last = True
        return bool(waiting)

    def _piece(self, start: int, k: int, audio: np.ndarray, last: bool) -> Scheduled:
        m = self.motion
        h = CONTEXT_FRAMES
        tail = audio[-(m.samples_of(start + k)[0] - m.samples_of(start + k - 1)[0]):]
        signal = np.concatenate([self.history, audio, tail])  # the last frame, once more
        loud, centroid = audio_features(signal, m.rate, h + k + 1, m.fps)
        tracks = build_tracks(loud, centroid, None, m.fps, m.seed, m.mouth_width,
                              m.face_width)
        ahead = np.concatenate([loud, np.full(FUTURE_FRAMES, loud[h + k - 1])])
        raw, emphasis = motion_energy(ahead, m.fps)
        energy = np.empty(k, np.float32)
        for i in range(k):
            self.energy = float(np.clip(raw[h + i], self.energy - ENERGY_STEP,
                                        self.energy + ENERGY_STEP))
            energy[i] = self.energy
        part = slice(h, h + k)
        return Scheduled(self.line, self.seq, last, start, k, self.words, None,
                         tracks.opening[part], tracks.lateral[part], energy,
                         emphasis[part].astype(np.float32), np.zeros(k, np.float32),
                         streamed=True)


def _silent(samples: np.ndarray) -> bool:
    return bool(np.sqrt(np.mean(np.square(samples, dtype=np.float64))) < SILENT_RMS)


def estimated_visemes(piece: Scheduled, mouth_width: float, start: float,
                      fps: int) -> list[list[Any]]:
    """[[media_time, viseme name], ...] guessed from a piece's mouth tracks (an audio line has
    no phonemes): rest, mid, open, spread or rounded; a name only where it changes."""
    items: list[list[Any]] = []
    for k in range(piece.n_frames):
        opening, lateral = float(piece.opening[k]), float(piece.lateral[k]) / mouth_width
        if opening < 0.08:
            name = "rest"
        elif lateral > 0.02:
            name = "spread"
        elif lateral < -0.03:
            name = "rounded"
        else:
            name = "open" if opening > 0.55 else "mid"
        if not items or items[-1][1] != name:
            items.append([round(start + k / fps, 3), name])
    return items
