"""Settings shared by every JayAvatar process, read from the environment once at start-up.

Each service builds its settings object in `main()` (or the app lifespan) and passes it down;
nothing reads `os.environ` deeper in the code.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.layout import Layout
from shared.store import LocalStore, S3Config, S3Store, Store

_STORES: dict[tuple[str, ...], Store] = {}
_STORES_LOCK = threading.Lock()


class Settings(BaseSettings):
    """Settings every process needs. Environment variables use the field names in upper case."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6390/0"
    data_dir: Path = Path("data")
    models_dir: Path = Path("models")
    log_level: str = "INFO"

    # Crash recovery: a stage execution holds a lease renewed by a heartbeat thread.
    lease_ttl_s: float = Field(15.0, gt=0.5)
    heartbeat_s: float = Field(0.0, ge=0)  # 0 means lease_ttl_s / 3
    max_attempts: int = Field(3, ge=1, le=20)
    retry_backoff_s: float = Field(2.0, ge=0)
    reconcile_every_s: float = Field(2.0, gt=0)

    # Visual stage: frames per checkpointed chunk.
    chunk_frames: int = Field(125, ge=1)  # 5 s at 25 fps: the most a crash can cost
    # Chunks drawn side by side by engines that allow it; 0 means one per usable CPU core.
    render_lanes: int = Field(0, ge=0, le=64)

    # Overlapping stages: a stage that publishes pieces (audio sentences, visual chunks) opens
    # its next stage on its first piece; false runs the stages one after another (the
    # comparison `make bench` draws).
    pipeline_overlap: bool = True
    # The first visual chunk's frames (later chunks double up to chunk_frames): small, so the
    # first playable segment of a job comes quickly.
    first_chunk_frames: int = Field(10, ge=1)

    # Free space (MB) DATA_DIR must keep: below it the API refuses new work (507) and /healthz
    # says "disk low"; a stage that hits a full disk waits for it before running again.
    min_free_mb: float = Field(500.0, ge=0)
    # Stage workers lower their CPU priority by this much (nice): batch work yields the CPU to
    # the API and Redis when both want it, and still gets all of it when the API is idle.
    worker_nice: int = Field(10, ge=0, le=19)

    # Live sessions (shared/live.py): how many 512x512 25 fps sessions this machine holds
    # (smaller or slower sessions count in proportion to their pixels per second), how long an
    # unattended session lives, the stream's fragment length, and the lease a worker holds.
    live_max_sessions: float = Field(4.0, ge=0)
    live_idle_timeout_s: float = Field(300.0, gt=0)
    live_fragment_ms: int = Field(80, ge=20, le=2000)
    live_lease_ttl_s: float = Field(1.0, gt=0.1)
    live_sessions_per_worker: int = Field(4, ge=1, le=64)
    # Scheduling priority (nice value) the live workers take at start: interactive sessions
    # before batch work on a busy machine; below 0 needs CAP_SYS_NICE (root).
    live_nice: int = Field(0, ge=-20, le=19)

    # Lanes (shared/lanes.py): a job of at most this many seconds of work (512x512 25 fps video)
    # waits in the short lane; a client has at most this many short jobs unfinished (0: no limit),
    # its further ones wait in the long lane.
    short_job_s: float = Field(30.0, ge=0)
    short_jobs_per_client: int = Field(8, ge=0)

    # Job records: a finished job's record, its listing entries and its folder go this many days
    # after it ended (0: kept forever); an Idempotency-Key names its job this long.
    job_retention_days: float = Field(30.0, ge=0)
    idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)

    # Where job files live (shared/store.py): "local" (DATA_DIR) or "s3", any S3-compatible
    # server (AWS S3, R2, MinIO, SeaweedFS); with s3, DATA_DIR keeps only scratch and a cache.
    store: Literal["local", "s3"] = "local"
    s3_endpoint: str = ""  # http(s)://host[:port]
    s3_bucket: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = Field("", repr=False)
    s3_region: str = "us-east-1"  # R2: "auto"

    # Append-only audit log of stage executions (one JSON line per event); off when empty.
    audit_log: Path | None = None

    @property
    def layout(self) -> Layout:
        """The paths under DATA_DIR, and the store holding their files (one per process)."""
        return Layout(self.data_dir, self.job_store)

    @property
    def job_store(self) -> Store:
        ident = (self.store, str(self.data_dir), self.s3_endpoint, self.s3_bucket,
                 self.s3_access_key_id, self.s3_region)
        with _STORES_LOCK:
            if ident not in _STORES:
                _STORES[ident] = (LocalStore(self.data_dir) if self.store == "local" else
                                  S3Store(self.data_dir, S3Config(
                                      self.s3_endpoint, self.s3_bucket, self.s3_access_key_id,
                                      self.s3_secret_access_key, self.s3_region)))
            return _STORES[ident]

    def _check_store(self) -> None:
        """With STORE=s3, the endpoint, bucket and credentials are all needed."""
        if self.store != "s3":
            return
        for name in ("s3_endpoint", "s3_bucket", "s3_access_key_id", "s3_secret_access_key"):
            if not getattr(self, name):
                raise ConfigError(f"invalid settings: STORE=s3 needs {name.upper()}; set it to "
                                  "the S3 server's " + _S3_HELP[name])
        if not re.match(r"^https?://[^/\s]+/?$", self.s3_endpoint):
            raise ConfigError(f"invalid settings: S3_ENDPOINT {self.s3_endpoint!r} must be an "
                              "http:// or https:// URL with no path, such as "
                              "https://<account>.r2.cloudflarestorage.com")

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_s or self.lease_ttl_s / 3

    @property
    def redis_url_redacted(self) -> str:
        """REDIS_URL fit for logs and messages: its password replaced by ***."""
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.redis_url)

    @classmethod
    def load(cls, **overrides: object) -> Self:
        """Build settings from the environment, naming the variable that is wrong."""
        try:
            settings = cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid settings: {problems}") from exc
        settings._check_store()
        return settings


_S3_HELP = {
    "s3_endpoint": "URL (http://127.0.0.1:8333 for `make run STORE=s3`)",
    "s3_bucket": "bucket that holds the job files",
    "s3_access_key_id": "access key id (docs/distributed.md: a key limited to that bucket)",
    "s3_secret_access_key": "secret access key, paired with S3_ACCESS_KEY_ID",
}
