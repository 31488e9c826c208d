"""Orchestrator settings: the shared ones plus the API's own limits."""

from __future__ import annotations

from pydantic import Field, SecretStr

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
    # Access (orchestrator/api/security.py): the token /v1 and /metrics need (required when HOST
    # is not loopback) and the Host names besides loopback ones (comma-separated, '*.x' allowed).
    api_token: SecretStr | None = None
    allowed_hosts: str = ""
    max_event_streams: int = Field(200, ge=1)  # open SSE streams per process; 503 past it

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def token(self) -> str | None:
        value = self.api_token.get_secret_value().strip() if self.api_token else ""
        return value or None

    @property
    def allowed_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
