"""The orchestrator's FastAPI app: REST API, job records, and the reconciler."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI

from orchestrator.api import disk, errors, limits, security
from orchestrator.api.deps import AppState
from orchestrator.api.routes import (
    avatars,
    events,
    health,
    jobs,
    media,
    metrics,
    sessions,
    watch,
    web,
    webrtc,
)
from orchestrator.avatars import AvatarService
from orchestrator.event_hub import EventHub
from orchestrator.images import ImageDecoder
from orchestrator.media_library import MediaLibrary
from orchestrator.reconciler import Reconciler
from orchestrator.settings import OrchestratorSettings
from orchestrator.staging import StagingArea
from shared.errors import ConfigError
from shared.jobs import JobStore
from shared.logs import configure_logging, hide_socket_queries
from shared.mirror import MirrorWriter
from shared.storage import owner_only

logger = logging.getLogger(__name__)


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or OrchestratorSettings.load()
        owner_only()  # faces, voices and texts in DATA_DIR are this user's alone
        configure_logging(s.log_level)
        hide_socket_queries()
        security.check_exposure(s)
        if s.api_workers > 1:
            _die_with_parent()
        conn = redis.Redis.from_url(s.redis_url, socket_timeout=10, health_check_interval=10,
                                    retry_on_timeout=True)
        store = JobStore.from_settings(conn, s)
        for root in (s.layout.avatars, s.layout.jobs, s.layout.media):
            root.mkdir(parents=True, exist_ok=True)
        staging = StagingArea(s.layout)  # uploads' staging; a dead process's is swept
        staging.sweep(s.layout.upload_roots)
        decoder = ImageDecoder(s)
        mirrors = MirrorWriter(s.data_dir)
        events = EventHub(s.redis_url)
        events.start()
        app.state.jayavatar = AppState(s, conn, store, AvatarService(conn, s, decoder, staging),
                                       MediaLibrary(s, decoder, staging), mirrors=mirrors,
                                       events=events)
        live_conn = sessions.install(app, app.state.jayavatar)
        reconciler = Reconciler(store, every_s=s.reconcile_every_s, lease_ttl_s=s.lease_ttl_s,
                                sweep_after_s=s.sweep_after_s)
        if s.run_reconciler:
            reconciler.start()
        logger.info("orchestrator ready: redis %s, data %s", s.redis_url_redacted, s.data_dir)
        try:
            yield
        finally:
            reconciler.stop()
            mirrors.close()
            await events.close()
            await live_conn.aclose()
            conn.close()
            staging.close()

    app = FastAPI(title="JayAvatar", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    app.add_middleware(limits.BodyLimit)  # innermost: bodies sized once the asker is let in
    app.add_middleware(disk.DiskGuard)  # inside security.Guard: who asks is checked first
    app.add_middleware(security.Guard)
    app.include_router(security.router)
    app.include_router(avatars.router)
    app.include_router(jobs.router)
    app.include_router(sessions.router)
    app.include_router(media.router)
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(watch.router)
    app.include_router(webrtc.router)
    app.include_router(metrics.router)
    app.include_router(web.router)
    return app


PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
SUPERVISOR_ENV = "JAYAVATAR_API_SUPERVISOR"  # the pid of the API processes' supervisor


def _die_with_parent() -> None:
    """One of API_WORKERS processes: die with uvicorn's supervisor, even when it is killed
    with SIGKILL, so a killed orchestrator never leaves processes serving its port (a crash of
    the whole orchestrator, as for one process: accepted jobs are already in Redis). The kernel
    sends this process SIGKILL when its parent dies (PR_SET_PDEATHSIG), a thread also watches
    for it being handed to another parent, and one that finds the supervisor gone already (it
    died while this process was starting) leaves at once."""
    import ctypes
    import signal
    import threading

    # the supervisor's pid, as it said it (a process still starting when the supervisor died
    # has been handed to another parent already, so its own parent pid would not tell)
    parent = int(os.environ.get(SUPERVISOR_ENV) or os.getppid())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        logger.warning("no parent-death signal on this system; a thread watches the parent")
    if os.getppid() != parent:  # it died before the signal was asked for
        logger.warning("the API supervisor (pid %d) is gone; this API process stops", parent)
        os._exit(1)

    def alive() -> bool:
        try:
            state = open(f"/proc/{parent}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return os.getppid() == parent and state not in ("Z", "X")

    def watch() -> None:
        while alive():
            time.sleep(0.5)
        logger.warning("the API supervisor (pid %d) is gone; this API process stops", parent)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    """`python -m orchestrator.app`: serve the API with uvicorn (orchestrator/serving.py)."""
    import uvicorn

    from orchestrator import serving

    try:
        settings = OrchestratorSettings.load()
        security.check_exposure(settings)
    except ConfigError as exc:
        sys.stderr.write(f"jayavatar orchestrator: {exc}\n")
        raise SystemExit(2) from exc
    fd_limit = serving.raise_fd_limit()
    limits = serving.Limits(
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        max_header_bytes=settings.http_max_header_kb * 1024,
        max_connections=serving.connection_cap(settings.http_max_connections, fd_limit))
    several = settings.api_workers > 1  # then each process builds its app from the environment
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # what the API processes die with
    uvicorn.run("orchestrator.app:create_app" if several else create_app(settings),
                factory=several, workers=settings.api_workers, host=settings.host,
                port=settings.port, access_log=settings.access_log,
                log_level=settings.log_level.lower(), http=serving.protocol(limits),
                timeout_keep_alive=settings.http_idle_timeout_s,
                ws_max_size=serving.WS_MAX_BYTES)


if __name__ == "__main__":
    main()
