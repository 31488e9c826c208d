"""What route handlers need, taken from the app state built in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import redis
from fastapi import Request

from orchestrator.avatars import AvatarService
from orchestrator.media_library import MediaLibrary
from orchestrator.settings import OrchestratorSettings
from shared.jobs import JobStore
from shared.mirror import MirrorWriter
from shared.models import AvatarRecord


class StreamCount:
    """Event streams open in this process, bounded by MAX_EVENT_STREAMS: each holds a Redis
    connection (its blocking XREAD) and a task for as long as its client stays."""

    def __init__(self) -> None:
        self.open = 0


@dataclass
class AppState:
    settings: OrchestratorSettings
    conn: redis.Redis
    store: JobStore
    avatars: AvatarService
    media: MediaLibrary
    mirrors: MirrorWriter  # new jobs' job.json, written off the request path
    # avatar id -> (monotonic time read, record): POST /v1/jobs reads an avatar from Redis at
    # most every AVATAR_CACHE_S (routes/jobs.py)
    avatar_cache: dict[str, tuple[float, AvatarRecord]] = field(default_factory=dict)
    event_streams: StreamCount = field(default_factory=StreamCount)


async def state(request: Request) -> AppState:
    """Async so FastAPI calls it in the event loop: a sync dependency costs every request a
    trip through the thread pool."""
    return cast(AppState, request.app.state.jayavatar)
