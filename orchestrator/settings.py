"""Orchestrator settings: the shared ones plus the API's own limits."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class OrchestratorSettings(Settings):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_text_chars: int = Field(5000, ge=1)
    max_upload_mb: float = Field(20.0, gt=0)
    max_image_side: int = Field(8192, ge=256)
    min_image_side: int = Field(64, ge=16)
    analyze_timeout_s: float = Field(60.0, gt=0)
    run_reconciler: bool = True

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
