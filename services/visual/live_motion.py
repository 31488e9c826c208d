"""Frame parameters for a live stream, made as it goes: idle life (blinks, breathing, a slow sway
that never stops) plus the speech pieces scheduled on the timeline, each with its audio.

Batch clips compute their whole tracks up front (motion.py); a live stream does not know what it
will say next, so idle motion is a function of the media time alone (continuous across pieces
and across a worker taking the session over) and each sentence brings its own mouth tracks,
made by the same code as a batch clip's (audio_features, build_tracks, motion_energy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.visual.expression import Look
from services.visual.motion import (
    RELAX_BEFORE_S,
    RELAX_EASE_S,
    RELAX_HOLD_S,
    audio_features,
    build_tracks,
    motion_energy,
)
from services.visual.persona_motion import PersonaMotion
from services.visual.visemes import visemes_of
from shared.persona import Feeling
from shared.phonemes import Phoneme

IDLE_SWAY = 0.3  # share of the speaking head motion kept in silence, so the face stays alive
STOP_FADE_FRAMES = 2  # a stopped line fades out over this many frames (no click)
KEEP_FRAMES = 8  # a piece is kept this long after it played (its fragments are still going out)


@dataclass
class Scheduled:
    """A sentence, or a piece of an audio line, placed on the timeline at frame `start` (this
    stream's frame numbers)."""

    line: str
    seq: int
    last: bool
    start: int
    n_frames: int
    text: str
    phonemes: list[Phoneme] | None
    opening: np.ndarray
    lateral: np.ndarray
    energy: np.ndarray
    emphasis: np.ndarray
    tongue: np.ndarray  # tongue tip up 0..1 (t/d/n/l/th), as in a batch clip's tracks
    events_sent: bool = False
    feeling: Feeling = field(default_factory=Feeling)  # the face (and voice) it is said with
    streamed: bool = False  # a piece of an audio line (services/visual/live_audio.py)
    # the speech entries whose audio it plays: (entry id, the piece's sample where that entry's
    # audio begins; below 0 for one that began in an earlier piece)
    sources: list[tuple[str, int]] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.n_frames


@dataclass(frozen=True)
class FrameParams:
    opening: float
    lateral: float
    blink: float
    tx: float
    ty: float
    rot: float
    breath: float
    tongue: float = 0.0
    look: Look | None = None  # emotion, state and gaze (services/visual/persona_motion.py)
    relax: float = 0.0  # parted lips relaxed together around speech (motion.speaking_lips)

    def astuple(self) -> tuple[float, float, float, float, float, float, float, float]:
        """In the order of `LiveAnimation.draw`'s parameters."""
        return (self.opening, self.lateral, self.blink, self.tx, self.ty, self.rot, self.breath,
                self.tongue)


@dataclass
class _Blinks:
    """Eyelid closure from a blink schedule drawn as the stream goes (~15 a minute, ~150 ms)."""

    rng: np.random.Generator
    next_at: float = 0.0
    active: list[tuple[float, float]] = field(default_factory=list)  # (peak time, duration)
    length: float = 1.0  # blinks take this much longer (thinking)

    def closure(self, t: float) -> float:
        while self.next_at <= t + 0.2:
            starts = [self.next_at]
            if self.rng.random() < 0.12:
                starts.append(self.next_at + self.rng.uniform(0.3, 0.45))
            for start in starts:
                duration = self.rng.uniform(0.13, 0.18) * self.length
                self.active.append((start + 0.4 * duration, duration))
            self.next_at = starts[-1] + max(1.2, self.rng.gamma(2.0, 2.0))
        self.active = [(p, d) for p, d in self.active if p + d > t]
        out = 0.0
        for peak, duration in self.active:
            dt = t - peak
            half = 0.4 * duration if dt < 0 else 0.6 * duration
            out = max(out, 1.0 - (dt / half) ** 2)
        return max(0.0, out)


class LiveMotion:
    """Per-frame parameters and audio for frame numbers 0, 1, 2, ... of one stream whose frame 0
    sits at `offset` seconds of the session's media time."""

    def __init__(self, fps: int, sample_rate: int, mouth_width: float, face_width: float,
                 seed: int = 0, offset: float = 0.0) -> None:
        self.fps, self.rate, self.offset = fps, sample_rate, offset
        self.mouth_width, self.face_width, self.seed = mouth_width, face_width, seed
        rng = np.random.default_rng(seed)
        # three slow sines per axis: smooth, zero-mean drift of about unit amplitude
        self._sway = rng.uniform([0.12, 0, 0.5], [0.6, 2 * np.pi, 1.0], size=(3, 3, 3))
        self._breath = (rng.uniform(3.4, 4.6), rng.uniform(0, 2 * np.pi))
        self._blinks = _Blinks(np.random.default_rng(seed + 1), next_at=offset + 0.8)
        self.persona = PersonaMotion(seed, offset)
        self.pieces: list[Scheduled] = []
        self._audio: dict[int, np.ndarray] = {}  # frame -> its int16 samples, while speaking
        self._spoke: int | None = None  # the last frame that played speech

    def media_time(self, frame: int) -> float:
        return self.offset + frame / self.fps

    def samples_of(self, frame: int) -> tuple[int, int]:
        """The audio sample range [a, b) of `frame` on this stream's timeline."""
        return (round(frame * self.rate / self.fps), round((frame + 1) * self.rate / self.fps))

    @property
    def busy_until(self) -> int:
        """The first frame after all scheduled speech."""
        return max((p.end for p in self.pieces), default=0)

    def schedule(self, now: int, line: str, seq: int, last: bool, pcm: np.ndarray, rate: int,
                 phonemes: list[Phoneme] | None, words: str,
                 at: int | None = None) -> Scheduled:
        """Place a sentence after what is already scheduled, or at frame `now` if silent (at
        frame `at` if given: before 0 for one whose start played in the stream before this)."""
        samples = pcm.astype(np.float32) / 32768.0
        if rate != self.rate:
            n = round(len(samples) * self.rate / rate)
            samples = np.interp(np.arange(n) * rate / self.rate, np.arange(len(samples)), samples)
            samples = samples.astype(np.float32)
            phonemes = phonemes  # timings are in seconds: unchanged
        start = max(now, self.busy_until) if at is None else at
        n_frames = max(1, -(-len(samples) * self.fps // self.rate))
        loud, centroid = audio_features(samples, self.rate, n_frames, self.fps)
        tracks = build_tracks(loud, centroid, phonemes, self.fps, self.seed, self.mouth_width,
                              self.face_width)
        energy, emphasis = motion_energy(loud, self.fps)
        tongue = tracks.tongue if tracks.tongue is not None else np.zeros(n_frames, np.float32)
        piece = Scheduled(line, seq, last, start, n_frames, words, phonemes,
                          tracks.opening, tracks.lateral, energy, emphasis, tongue)
        return self.place(piece, samples)

    def place(self, piece: Scheduled, samples: np.ndarray) -> Scheduled:
        """Put a piece whose tracks are made on the timeline, with its audio (float32 at the
        stream's rate from the piece's first frame on; a last partial frame is dropped)."""
        self.pieces.append(piece)
        a0 = self.samples_of(piece.start)[0]
        pcm16 = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
        for k in range(max(0, -piece.start), piece.n_frames):
            a, b = self.samples_of(piece.start + k)
            self._audio[piece.start + k] = pcm16[a - a0:b - a0]
        return piece

    def stop(self, now: int) -> list[Scheduled]:
        """Cut speech from frame `now` on (fading out over STOP_FADE_FRAMES); return the pieces
        that were playing or waiting, so their lines can be ended."""
        cut = [p for p in self.pieces if p.end > now]
        for p in cut:
            keep = max(0, min(p.n_frames, now + STOP_FADE_FRAMES - p.start))
            ramp = np.linspace(1.0, 0.0, STOP_FADE_FRAMES + 1)[1:]
            for name in ("opening", "lateral", "energy", "emphasis", "tongue"):
                track = getattr(p, name)[:keep].copy()
                tail = min(len(track), STOP_FADE_FRAMES)
                if tail:
                    track[-tail:] *= ramp[-tail:]
                setattr(p, name, track)
            p.n_frames = keep
            # its line is ended by the stop: what is left of it (a fade) starts and ends no speech
            p.events_sent, p.last = True, False
        self.pieces = [p for p in self.pieces if p.n_frames > 0]
        for f in [f for f in self._audio if f >= now]:
            if f < now + STOP_FADE_FRAMES:
                chunk = self._audio[f].astype(np.float32)
                k = f - now
                fade = np.linspace(1.0 - k / STOP_FADE_FRAMES, 1.0 - (k + 1) / STOP_FADE_FRAMES,
                                   len(chunk))
                self._audio[f] = (chunk * fade).astype(np.int16)
            else:
                del self._audio[f]
        return cut

    def playing(self, frame: int) -> Scheduled | None:
        for p in self.pieces:
            if p.start <= frame < p.end:
                return p
        return None

    def frame(self, frame: int) -> tuple[FrameParams, np.ndarray]:
        """The parameters and the audio samples of `frame`."""
        t = self.media_time(frame)
        piece = self.playing(frame)
        opening = lateral = energy = emphasis = tongue = 0.0
        if piece is not None:
            k = frame - piece.start
            opening, lateral = float(piece.opening[k]), float(piece.lateral[k])
            energy, emphasis = float(piece.energy[k]), float(piece.emphasis[k])
            tongue = float(piece.tongue[k])
        sway = self._sway_at(t)
        look, nod = self.persona.at(t, speaking=piece is not None)
        self._blinks.length = self.persona.blink_length
        amount = IDLE_SWAY + (1.0 - IDLE_SWAY) * energy
        fw = self.face_width
        period, phase = self._breath
        params = FrameParams(
            opening=opening, lateral=lateral, blink=self._blinks.closure(t),
            tx=0.010 * fw * sway[0] * amount,
            ty=(0.007 * sway[1] + 0.006 * emphasis) * fw * amount + nod * fw,
            rot=float(np.deg2rad(1.0)) * sway[2] * amount,
            breath=0.012 * fw * (0.6 + 0.4 * energy)
            * (0.5 - 0.5 * float(np.cos(2 * np.pi * t / period + phase))),
            tongue=tongue, look=look, relax=self._relax_at(frame, piece is not None))
        a, b = self.samples_of(frame)
        audio = self._audio.pop(frame, None)
        if audio is None or len(audio) != b - a:
            audio = np.zeros(b - a, np.int16)
        self.pieces = [p for p in self.pieces if p.end > frame - KEEP_FRAMES]
        return params, audio

    def _relax_at(self, frame: int, speaking: bool) -> float:
        """How far lips the photo shows parted relax together, as a batch clip's do
        (motion.speaking_lips): fully while a line plays and from RELAX_BEFORE_S before the next
        one scheduled, easing back to the photo's own lips RELAX_HOLD_S after speech ends."""
        if speaking:
            self._spoke = frame
            return 1.0
        ahead = [p.start for p in self.pieces if p.start > frame]
        until = (min(ahead) - frame) / self.fps if ahead else np.inf
        since = np.inf if self._spoke is None else (frame - self._spoke) / self.fps
        return max(_ease(until, RELAX_BEFORE_S), _ease(since, RELAX_HOLD_S))

    def _sway_at(self, t: float) -> np.ndarray:
        f, phase, amp = self._sway[..., 0], self._sway[..., 1], self._sway[..., 2]
        out: np.ndarray = (amp * np.sin(2 * np.pi * f * t + phase)).sum(axis=1) / 1.6
        return out


def _ease(seconds: float, hold: float) -> float:
    """1 up to `hold` seconds, then down to 0 over RELAX_EASE_S (a raised cosine)."""
    return 0.5 + 0.5 * float(np.cos(np.pi * np.clip((seconds - hold) / RELAX_EASE_S, 0.0, 1.0)))


def viseme_items(phonemes: list[Phoneme] | None, start: float) -> list[list[Any]]:
    """[[media_time, viseme name], ...] of a sentence starting at media time `start`."""
    items: list[list[Any]] = []
    for p in phonemes or []:
        name = visemes_of(p.symbol)[0].name
        at = round(start + p.start, 3)
        if not items or items[-1][1] != name:
            items.append([at, name])
    return items
