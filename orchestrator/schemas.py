"""API bodies: what clients send and what they get back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import textcheck
from shared.models import AvatarRecord, JobRecord, MediaRecord, StageInfo


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    avatar_id: str = Field(min_length=1, max_length=64)
    # What is said: `text` spoken by a voice, or `audio` ("media:<id>" of a recording uploaded
    # with kind=speech), with `text` then optional: the recording's transcript.
    text: str = ""
    audio: str | None = Field(None, max_length=80)
    language: str = Field("en", max_length=20)  # of the recording: "en" or another code
    normalize: bool = False  # the recording brought to -16 LUFS (else kept as it is)
    voice: str = "auto"
    renderer: str = "auto"
    fps: int = Field(25, ge=10, le=60)
    size: int = Field(512, ge=256, le=1024, multiple_of=2)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    speed: float = Field(1.0, ge=0.5, le=2.0)
    aspect: Literal["1:1", "16:9", "9:16"] = "1:1"
    framing: Literal["face", "original"] = "face"
    # Compose options; background and music are checked (and named media looked up) in
    # create_job, so that a wrong value gets a message saying what is accepted.
    background: str = Field("keep", max_length=80)
    music: str | None = Field(None, max_length=80)
    music_volume: float = Field(-10.0, ge=-40.0, le=0.0)
    captions: Literal["off", "srt", "burn"] = "off"
    crf: int = Field(18, ge=14, le=35)
    # the persona's emotion over the clip and how strongly it shows (shared/persona.py)
    emotion: Literal["neutral", "happy", "sad", "surprised", "angry", "concerned"] = "neutral"
    intensity: float = Field(1.0, ge=0.0, le=1.0)

    @field_validator("avatar_id", "voice", "renderer", "background", "music", "audio",
                     "language")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        """Names and options: printable text on one line (the text itself is checked, with
        its own error code, in create_job)."""
        problem = textcheck.problem(value, multiline=False) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


class JobAccepted(BaseModel):
    id: str
    status: str
    status_url: str


class JobPublic(BaseModel):
    id: str
    avatar_id: str
    text: str
    status: str
    stage: str
    attempt: int
    lane: str  # the queue its stages wait in: "short" or "long" (shared/lanes.py)
    progress: float
    stages: dict[str, StageInfo]
    engines: dict[str, str]
    options: dict[str, Any]
    notes: list[str]
    error: str | None
    created_at: float
    finished_at: float | None
    result_url: str | None
    captions_url: str | None = None

    @classmethod
    def of(cls, rec: JobRecord) -> JobPublic:
        done = rec.status == "succeeded"
        return cls(
            id=rec.id, avatar_id=rec.avatar_id, text=rec.text, status=rec.status,
            stage=rec.stage, attempt=rec.attempt, lane=rec.lane, progress=rec.progress(),
            stages=rec.stages,
            engines=rec.engines, options=rec.options.model_dump(), notes=rec.notes,
            error=rec.error, created_at=rec.created_at, finished_at=rec.finished_at,
            result_url=f"/v1/jobs/{rec.id}/result" if done else None,
            captions_url=(f"/v1/jobs/{rec.id}/captions"
                          if done and rec.options.captions != "off" else None),
        )


class MediaPublic(MediaRecord):
    ref: str  # what job options take: "media:<id>"
    file_url: str

    @classmethod
    def of(cls, rec: MediaRecord) -> MediaPublic:
        return cls(**rec.model_dump(), ref=f"media:{rec.id}", file_url=f"/v1/media/{rec.id}/file")


class AvatarPublic(AvatarRecord):
    notes: list[str] = []


class SessionCreate(BaseModel):
    """POST /v1/sessions: a live session's avatar and stream shape (options as for jobs)."""

    model_config = ConfigDict(extra="forbid")

    avatar_id: str = Field(min_length=1, max_length=64)
    voice: str = Field("auto", max_length=40)
    renderer: str = Field("auto", max_length=40)
    size: int = Field(512, ge=256, le=1024, multiple_of=2)
    fps: int = Field(25, ge=10, le=60)
    aspect: Literal["1:1", "16:9", "9:16"] = "1:1"
    framing: Literal["face", "original"] = "face"


class SessionPublic(BaseModel):
    id: str
    avatar_id: str
    options: dict[str, Any]
    width: int
    height: int
    created_at: float
    ws_url: str
