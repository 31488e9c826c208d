"""Orchestrator settings: the shared ones plus the API's own limits."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import Settings


class OrchestratorSettings(Settings):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_text_chars: int = Field(5000, ge=1)
    max_upload_mb: float = Field(20.0, gt=0)
    # Recordings of speech for jobs (POST /v1/media kind=speech): larger, as a WAV of minutes is.
    max_speech_upload_mb: float = Field(120.0, gt=0)
    max_speech_s: float = Field(600.0, gt=1)
    max_image_side: int = Field(8192, ge=256)
    min_image_side: int = Field(64, ge=16)
    analyze_timeout_s: float = Field(60.0, gt=0)
    # Uploads (orchestrator/images.py, api/limits.py): pixels an image may declare in its header,
    # pixels kept (larger pictures are reduced), memory all decodes may hold at once, avatar
    # uploads in progress at once (503 past it), the largest JSON body.
    max_image_pixels: int = Field(8192 * 8192, ge=65536)
    max_analysis_pixels: int = Field(4096 * 4096, ge=65536)
    decode_budget_mb: int = Field(384, ge=16)
    max_pending_avatars: int = Field(16, ge=1)
    max_json_kb: int = Field(256, ge=16)
    run_reconciler: bool = True
    # A finished job's leftovers (orchestrator/leftovers.py) are removed this long after it ended.
    sweep_after_s: float = Field(600.0, ge=0)
    # Access (orchestrator/api/security.py): the token /v1 and /metrics need (required when HOST
    # is not loopback) and the Host names besides loopback ones (comma-separated, '*.x' allowed).
    api_token: SecretStr | None = None
    allowed_hosts: str = ""
    # Guessing the token (orchestrator/logins.py): wrong tokens one client address may send in
    # a window; past it every try gets 429 until the window is over.
    login_max_failures: int = Field(10, ge=1)
    login_window_s: float = Field(60.0, gt=0)
    max_event_streams: int = Field(200, ge=1)  # open SSE streams per process; 503 past it
    # Live sockets (orchestrator/viewers.py): open at once on one session, and from one client
    # address over all sessions; past either a socket is closed with 4429 and a sentence.
    live_max_viewers: int = Field(8, ge=1)
    live_max_client_sockets: int = Field(16, ge=1)
    # Serving: API processes (one reconciler is active among them) and uvicorn's access log.
    api_workers: int = Field(1, ge=1, le=32)
    access_log: bool = False
    # Connections (orchestrator/serving.py): a request head must be in within this; a kept-alive
    # connection idle this long is closed; a body gets this long plus 1 s per 500 bytes; the
    # largest head; connections open at once (0: what the file-descriptor limit leaves).
    http_header_timeout_s: float = Field(10.0, gt=0)
    http_idle_timeout_s: int = Field(5, ge=1)
    http_body_timeout_s: float = Field(20.0, gt=0)
    http_max_header_kb: int = Field(64, ge=8, le=1024)
    http_max_connections: int = Field(0, ge=0)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_speech_upload_bytes(self) -> int:
        return int(self.max_speech_upload_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return self.max_json_kb * 1024

    @property
    def token(self) -> str | None:
        value = self.api_token.get_secret_value().strip() if self.api_token else ""
        return value or None

    @property
    def allowed_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
