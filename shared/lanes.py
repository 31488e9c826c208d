"""Lanes: the queue a job's stages wait in, chosen at submission from the job's estimated cost.

Every stage has two rq queues (shared/pipeline.py): the short lane's and the long lane's. A job
goes in the short lane when it is estimated at no more than SHORT_JOB_S seconds of work, the
seconds of video the default engines make at 512x512 and 25 fps: its speech (the text at the
voice's pace, or the recording's length) times its frames against that reference (pixels, frame
rate) and its renderer's pace. Workers serve the short lane first, and a short-lane worker serves
nothing else, so a one-line job starts within moments behind any number of long ones.

Per client (the API token's hash, or "global"; `JobRecord.client`), at most
SHORT_JOBS_PER_CLIENT short jobs are unfinished at once: past it, a client's short jobs are bulk
work and wait in the long lane, so one client's burst of one-liners cannot fill the short lane.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import engine_catalog
from shared.models import JobOptions
from shared.pipeline import LONG, SHORT, Lane

CHARS_PER_S = 16.0  # Piper's joe at speed 1 (bench.py's 60 s text has 959 characters)
REFERENCE_FRAMES = 512 * 512 * 25  # pixels drawn per second of video at the reference


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """How long the speech of `text` is, about, at `speed`."""
    return len(text) / CHARS_PER_S / speed


def cost_s(options: JobOptions, renderer: str | None, *, text: str = "",
           recording_s: float | None = None) -> float:
    """The job's estimated work, in seconds of 512x512 25 fps video drawn by `portrait`."""
    speech = recording_s if recording_s is not None else speech_seconds(text, options.speed)
    width, height = options.frame_size()
    try:
        pace = engine_catalog.spec(renderer).pace if renderer else 1.0
    except KeyError:
        pace = 1.0
    return round(speech * width * height * options.fps / REFERENCE_FRAMES * pace, 3)


@dataclass(frozen=True)
class LanePolicy:
    """SHORT_JOB_S and SHORT_JOBS_PER_CLIENT (0: no limit per client)."""

    short_job_s: float = 30.0
    per_client: int = 0

    def wants_short(self, cost: float) -> bool:
        """Whether a job of this cost belongs in the short lane (if its client has room)."""
        return cost <= self.short_job_s

    def lane(self, cost: float, client_short_jobs: int) -> Lane:
        """The lane of a job of `cost` whose client has `client_short_jobs` unfinished short
        jobs already."""
        if not self.wants_short(cost):
            return LONG
        if self.per_client and client_short_jobs >= self.per_client:
            return LONG
        return SHORT
