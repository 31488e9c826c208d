"""API bodies: what clients send and what they get back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.models import AvatarRecord, JobRecord, StageInfo


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    avatar_id: str = Field(min_length=1, max_length=64)
    text: str
    voice: str = "auto"
    renderer: str = "auto"
    fps: int = Field(25, ge=10, le=60)
    size: int = Field(512, ge=256, le=1024, multiple_of=2)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    speed: float = Field(1.0, ge=0.5, le=2.0)
    aspect: Literal["1:1", "16:9", "9:16"] = "1:1"
    framing: Literal["face", "original"] = "face"


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
    progress: float
    stages: dict[str, StageInfo]
    engines: dict[str, str]
    options: dict[str, Any]
    notes: list[str]
    error: str | None
    created_at: float
    finished_at: float | None
    result_url: str | None

    @classmethod
    def of(cls, rec: JobRecord) -> JobPublic:
        return cls(
            id=rec.id, avatar_id=rec.avatar_id, text=rec.text, status=rec.status,
            stage=rec.stage, attempt=rec.attempt, progress=rec.progress(), stages=rec.stages,
            engines=rec.engines, options=rec.options.model_dump(), notes=rec.notes,
            error=rec.error, created_at=rec.created_at, finished_at=rec.finished_at,
            result_url=f"/v1/jobs/{rec.id}/result" if rec.status == "succeeded" else None,
        )


class AvatarPublic(AvatarRecord):
    notes: list[str] = []


class ErrorBody(BaseModel):
    error: str
    message: str
