"""The pipeline, declared once: the stages in order, and for each what runs it and where.

Everything that names the stages reads `STAGES`: the job state machine (queue, entry point,
next stage), `execute` (upstream outputs, scratch cleanup), job records (progress weights), the
worker CLI (queues served, entry points allowed), the API (listings, metrics, health) and the
scripts that start workers (venv). It imports nothing but the standard library and names the
service code only as dotted strings, so `shared` never imports a service and the stdlib-only
scripts (scripts/stack.py) can read it from any Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The stages' published files (in jobs/<id>/<stage>/), named here for the stage that writes
# each one, the stages that read it and the API that serves the result.
SPEECH, PHONEMES = "speech.wav", "phonemes.json"  # audio; phonemes when the engine times them
WORDS = "words.json"  # audio: words recognised in a recording without transcript, for captions
VIDEO, MASK = "video.mp4", "mask.mkv"  # visual; the person mask when the background is replaced
RESULT, CAPTIONS = "result.mp4", "captions.srt"  # compose; captions when asked for

# Lanes: a job's stages wait in its lane's queue, chosen at submission by the job's estimated
# cost (shared/lanes.py), so a short job never waits behind long ones. Workers serve the lanes
# in this order; a short-lane worker (`jayavatar-worker <stage> --lane short`) serves only the
# first, so a short job finds a worker even while every other one renders a long job.
Lane = Literal["short", "long"]
SHORT: Lane = "short"
LONG: Lane = "long"
LANES: tuple[Lane, ...] = (SHORT, LONG)


@dataclass(frozen=True)
class Work:
    """One kind of rq job: the queue it is enqueued on and the function that runs it (a dotted
    name: rq imports it in the worker, and the worker CLI runs nothing else)."""

    queue: str
    entry_point: str


@dataclass(frozen=True)
class StageSpec:
    """One stage of every job. Its published output is `jobs/<id>/<name>/`: `output` always,
    `optional_outputs` when the job's options ask for them. `scratch` is a folder in
    `jobs/<id>/` where the stage keeps resumable partial work across executions (a crash
    resumes from it); `execute` removes it once the stage is done, skipped or canceled."""

    name: str
    work: Work
    upstream: tuple[str, ...]  # stages whose published outputs it reads
    next_stage: str | None  # None: the job has succeeded when this stage is done
    venv: str  # .venvs/<venv> holds the stage's libraries (its service's name)
    weight: float  # share of the whole job, for one overall progress figure
    output: str
    optional_outputs: tuple[str, ...] = ()
    scratch: str | None = None
    also_serves: tuple[Work, ...] = ()  # other work its workers take, before the stage's own
    # It publishes its output in pieces as it goes (jobs/<id>/<name>.pieces/, shared/pieces.py)
    # and, with PIPELINE_OVERLAP, opens its next stage on the first one.
    pieces: bool = False

    @property
    def streamed(self) -> bool:
        """Whether it reads an upstream stage's pieces (and may start before that is done)."""
        return any(STAGES[up].pieces for up in self.upstream)

    @property
    def module(self) -> str:
        """The worker module (`warm_up` loads its engine once per process)."""
        return self.work.entry_point.rpartition(".")[0]

    def queue(self, lane: str) -> str:
        """The rq queue in which this stage's work of `lane` waits: the stage's own queue for
        the short lane (where every job waited before there were lanes), `<queue>-long` else."""
        return self.work.queue if lane == SHORT else f"{self.work.queue}-{lane}"

    @property
    def queues(self) -> tuple[str, ...]:
        """Every rq queue in which this stage's work waits, one per lane."""
        return tuple(self.queue(lane) for lane in LANES)

    def worker_queues(self, lanes: tuple[Lane, ...] = LANES) -> tuple[str, ...]:
        """The rq queues a worker of this stage serving `lanes` listens on, in the order they
        are served: the other work first, then the lanes in LANES order."""
        return (*(w.queue for w in self.also_serves),
                *(self.queue(lane) for lane in LANES if lane in lanes))

    @property
    def entry_points(self) -> frozenset[str]:
        """The only functions this stage's workers run."""
        return frozenset({self.work.entry_point, *(w.entry_point for w in self.also_serves)})


# Avatar analysis (face detection on an uploaded portrait) runs in the visual workers, which
# hold the face mesh; it comes first so a new avatar is never stuck behind rendering.
AVATAR_ANALYSIS = Work("avatar", "services.visual.avatar.analyze")

STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (
    StageSpec(
        name="audio", work=Work("audio", "services.audio.worker.run"),
        upstream=(), next_stage="visual", venv="audio", weight=0.15,
        output=SPEECH, optional_outputs=(PHONEMES, WORDS),
        scratch="audio.sentences",  # per-sentence checkpoints of cloned voices
        pieces=True,  # speech, sentence by sentence
    ),
    StageSpec(
        name="visual", work=Work("visual", "services.visual.worker.run"),
        upstream=("audio",), next_stage="compose", venv="visual", weight=0.75,
        output=VIDEO, optional_outputs=(MASK,),
        also_serves=(AVATAR_ANALYSIS,),
        pieces=True,  # rendered chunks (its resumable checkpoints too)
    ),
    StageSpec(
        name="compose", work=Work("compose", "services.compositor.worker.run"),
        upstream=("audio", "visual"), next_stage=None, venv="compositor", weight=0.10,
        output=RESULT, optional_outputs=(CAPTIONS,),
        pieces=True,  # playable segments, served while the job renders (GET .../stream)
    ),
)}
FIRST_STAGE = next(iter(STAGES))
