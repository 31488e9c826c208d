"""Records that cross a process boundary: job records, stage manifests, avatar records."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import keys, pipeline, textcheck

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
StageState = Literal["pending", "queued", "running", "retry_wait", "done", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})

# Job options that name uploaded media (POST /v1/media) or a colour.
MEDIA_REF_PATTERN = r"^media:[0-9a-f]{16}$"
BACKGROUND_PATTERN = r"^(keep|#[0-9a-f]{6}|media:[0-9a-f]{16})$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$"  # BCP 47 language (and region), lower case

UNENCODABLE_NOTE = ("the text was stored with characters that are not valid Unicode; they are "
                    "shown as U+FFFD")


class JobOptions(BaseModel):
    """What the user chose for one job; validated by the orchestrator at submission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    voice: str = "auto"
    renderer: str = "auto"
    fps: int = Field(25, ge=10, le=60)
    size: int = Field(512, ge=256, le=1024)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    speed: float = Field(1.0, ge=0.5, le=2.0)
    # Output shape: `size` is the short side; `aspect` the frame's shape. `framing` "face" crops
    # around the face (face ~half the short side); "original" keeps the whole photo, fitted in.
    aspect: Literal["1:1", "16:9", "9:16"] = "1:1"
    framing: Literal["face", "original"] = "face"
    # Compose options: what goes behind the person ("keep", "#rrggbb" or "media:<id>" of an
    # uploaded image), a music bed ("media:<id>" of uploaded audio) `music_volume` dB under the
    # voice, captions, and the x264 CRF of the final encode when one of them needs a re-encode.
    background: str = Field("keep", pattern=BACKGROUND_PATTERN)
    music: str | None = Field(None, pattern=MEDIA_REF_PATTERN)
    music_volume: float = Field(-10.0, ge=-40.0, le=0.0)
    captions: Literal["off", "srt", "burn"] = "off"
    crf: int = Field(18, ge=14, le=35)
    # A job from a recording: the speech is the upload "media:<id>" (kind speech), the job's
    # text its transcript (or empty); `language` ("en", "en-gb", or another language's code:
    # the mouth then follows the sound alone) and `normalize` (loudness to -16 LUFS).
    audio: str | None = Field(None, pattern=MEDIA_REF_PATTERN)
    language: str = Field("en", pattern=LANGUAGE_PATTERN)
    normalize: bool = False
    # The persona's emotion over the whole clip (shared/persona.py), and how strongly it shows.
    emotion: Literal["neutral", "happy", "sad", "surprised", "angry", "concerned"] = "neutral"
    intensity: float = Field(1.0, ge=0.0, le=1.0)

    @property
    def english(self) -> bool:
        """Whether the recording is in a language the phone recogniser covers."""
        return self.language.split("-")[0] == "en"

    def frame_size(self) -> tuple[int, int]:
        """(width, height) in pixels, both even."""
        return frame_size(self.size, self.aspect)

    @property
    def compose_needs_whole_input(self) -> bool:
        """Whether the compositor needs the whole video and speech before it starts: a new
        background or burned captions re-encode the picture, music is mixed to a loudness
        measured over the whole speech. Such jobs have no watch stream until they are done."""
        return self.background != "keep" or self.music is not None or self.captions == "burn"

    @property
    def needs_mask(self) -> bool:
        """Whether the visual stage must write a person mask for the compositor."""
        return self.background != "keep"


ASPECTS = {"1:1": (1, 1), "16:9": (16, 9), "9:16": (9, 16)}
MIN_FACE_PX = 40  # narrowest face (cheek to cheek, output pixels) the portrait renderer animates


def original_face_width(face_width: float, photo: tuple[int, int], frame: tuple[int, int]
                        ) -> float:
    """How wide a face `face_width` px wide in a `photo` (w, h) is in the output `frame` (w, h)
    with framing "original" (the whole photo fitted inside the frame)."""
    return face_width * min(frame[0] / photo[0], frame[1] / photo[1])


def frame_size(size: int, aspect: str) -> tuple[int, int]:
    """(width, height) for a short side of `size` pixels and an aspect ratio, both even."""
    aw, ah = ASPECTS[aspect]
    long_side = 2 * int(round(size * max(aw, ah) / min(aw, ah) / 2))
    return (long_side, size) if aw > ah else (size, long_side) if ah > aw else (size, size)


class StageInfo(BaseModel):
    status: StageState = "pending"
    attempts: int = 0
    engine: str | None = None
    worker: str | None = None
    progress: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    skipped: bool = False  # a valid checkpoint already existed
    error: str | None = None


class JobRecord(BaseModel):
    """The job as stored in its Redis hash and mirrored to jobs/<id>/job.json."""

    model_config = ConfigDict(extra="ignore")

    id: str
    avatar_id: str
    text: str
    options: JobOptions
    idempotency_key: str | None = None
    idempotency_scope: str | None = None  # "token-<sha256 prefix>" or "global": the client
    request_hash: str | None = None  # sha256 of the submitted body, to check a reused key
    engines: dict[str, str] = {}  # stage -> engine chosen at submission
    # estimated work (seconds of 512x512 25 fps video) and the lane its stages wait in, set at
    # submission (shared/lanes.py); a record from before lanes waits in the short lane's queues
    cost_s: float = 0.0
    lane: pipeline.Lane = pipeline.SHORT
    notes: list[str] = []  # warnings a person should see (e.g. engine fallbacks)
    status: JobStatus = "queued"
    stage: str = pipeline.FIRST_STAGE
    attempt: int = 1
    stage_state: StageState = "queued"
    retry_at: float | None = None
    queued_at: float = Field(default_factory=time.time)
    stages: dict[str, StageInfo] = {}
    error: str | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def client(self) -> str:
        """Who submitted it: "token-<sha256 prefix>" of the API token it came with, or "global"."""
        return self.idempotency_scope or "global"

    def early(self, stage: str) -> bool:
        """Whether `stage` was opened before its upstream finished (overlapping stages: it
        runs on the pieces published so far) and is queued or running beside `self.stage`."""
        order = list(pipeline.STAGES)
        info = self.stages.get(stage)
        return (stage in order and self.stage in order
                and order.index(stage) > order.index(self.stage)
                and info is not None and info.status in ("queued", "running"))

    def attempt_of(self, stage: str) -> int | None:
        """The attempt a live execution of `stage` carries, or None if none may run now."""
        if stage == self.stage:
            return self.attempt
        if self.early(stage):
            return self.stages[stage].attempts
        return None

    def done(self, stage: str) -> bool:
        info = self.stages.get(stage)
        return info is not None and info.status == "done"

    def progress(self) -> float:
        if self.status == "succeeded":
            return 1.0
        total = 0.0
        for stage, spec in pipeline.STAGES.items():
            info = self.stages.get(stage)
            if info is not None:
                total += spec.weight * (1.0 if info.status == "done" else info.progress)
        return round(min(total, 0.999), 4)

    def to_hash(self) -> dict[Any, str]:
        """Flat string fields; complex values as JSON. (Keys typed Any: redis-py's hset wants
        a mapping keyed by its own union of key types.)"""
        out: dict[Any, str] = {}
        for key, value in self.model_dump(mode="json").items():
            out[key] = json.dumps(value)
        return out

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> JobRecord:
        """The record from its Redis hash; raises ValueError if it cannot be read. Text stored
        before submissions were checked is scrubbed (lone surrogates -> U+FFFD) and noted."""
        decoded = {
            keys.text(k): json.loads(v) for k, v in raw.items()
        }
        text = decoded.get("text")
        if isinstance(text, str) and textcheck.scrub(text) != text:
            decoded["text"] = textcheck.scrub(text)
            decoded["notes"] = [*decoded.get("notes", []), UNENCODABLE_NOTE]
        for field in ("error", "avatar_id"):
            if isinstance(decoded.get(field), str):
                decoded[field] = textcheck.scrub(decoded[field])
        # progress:<stage> fields are written by workers outside transitions.
        for stage in pipeline.STAGES:
            value = decoded.pop(f"progress:{stage}", None)
            info = decoded.get("stages", {}).get(stage)
            if value is not None and info is not None and info.get("status") == "running":
                info["progress"] = value
        return cls.model_validate(decoded)

    @classmethod
    def damaged(cls, job_id: str, raw: dict[Any, Any], exc: Exception) -> JobRecord:
        """A stand-in for a stored record that cannot be read: what can be read of it, as a
        failed job whose error says so. Never written back."""
        fields: dict[str, Any] = {}
        for k, v in raw.items():
            try:
                fields[keys.text(k)] = json.loads(v)
            except ValueError:
                continue

        def pick(name: str, kind: type | tuple[type, ...], default: Any) -> Any:
            value = fields.get(name)
            return value if isinstance(value, kind) else default

        if isinstance(exc, ValidationError) and exc.errors():
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "record"
            reason = f"field {textcheck.scrub(where)!r}: {textcheck.scrub(first['msg'])}"
        else:
            reason = textcheck.scrub(f"{type(exc).__name__}: {exc}")[:200]
        stage = pick("stage", str, pipeline.FIRST_STAGE)
        return cls(id=job_id, avatar_id=textcheck.scrub(pick("avatar_id", str, "")),
                   text=textcheck.scrub(pick("text", str, "")),
                   options=JobOptions.model_validate({}),
                   status="failed",
                   stage=stage if stage in pipeline.STAGES else pipeline.FIRST_STAGE,
                   stage_state="failed", created_at=pick("created_at", (int, float), 0.0),
                   finished_at=pick("finished_at", (int, float), None),
                   error=f"this job's stored record is damaged ({reason}); it cannot run, "
                         "be canceled or be repaired: submit the job again")


class OutputFile(BaseModel):
    name: str
    size: int
    sha256: str


class StageManifest(BaseModel):
    """Written last into a stage's directory: its presence and validity mean 'done'."""

    stage: str
    job_id: str
    engine: str
    engine_version: str
    input_hash: str
    files: list[OutputFile]
    info: dict[str, Any] = {}
    timings: dict[str, float] = {}
    execution_id: str
    created_at: float = Field(default_factory=time.time)


class AvatarRecord(BaseModel):
    id: str
    name: str | None = None
    width: int
    height: int
    face_box: tuple[int, int, int, int]
    faces_found: int
    face_index: int = 0  # which face is animated, numbered largest first
    has_voice_sample: bool = False
    voice_sample_seconds: float | None = None
    portrait_sha256: str
    voice_sha256: str | None = None
    created_at: float = Field(default_factory=time.time)


class MediaRecord(BaseModel):
    """An uploaded background image, music track or recording of speech, stored in media/<id>/
    beside media.json."""

    id: str
    kind: Literal["image", "audio", "speech"]
    name: str | None = None
    file: str  # file name inside media/<id>/: image.png, audio.flac or speech.flac
    size: int
    sha256: str
    width: int | None = None  # images
    height: int | None = None
    duration: float | None = None  # audio and speech, seconds
    sample_rate: int | None = None  # speech: the upload's own rate (stored at 48 kHz)
    created_at: float = Field(default_factory=time.time)
