"""What route handlers need, taken from the app state built in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import redis
from fastapi import Request

from orchestrator.avatars import AvatarService
from orchestrator.event_hub import EventHub
from orchestrator.media_library import MediaLibrary
from orchestrator.settings import OrchestratorSettings
from shared.jobs import JobStore
from shared.mirror import MirrorWriter
from shared.models import AvatarRecord


@dataclass
class AppState:
    settings: OrchestratorSettings
    conn: redis.Redis
    store: JobStore
    avatars: AvatarService
    media: MediaLibrary
    mirrors: MirrorWriter  # new jobs' job.json, written off the request path
    events: EventHub  # reads the job event streams this process serves (routes/events.py)
    # avatar id -> (monotonic time read, record): POST /v1/jobs reads an avatar from Redis at
    # most every AVATAR_CACHE_S (routes/jobs.py)
    avatar_cache: dict[str, tuple[float, AvatarRecord]] = field(default_factory=dict)


async def state(request: Request) -> AppState:
    """Async so FastAPI calls it in the event loop: a sync dependency costs every request a
    trip through the thread pool."""
    return cast(AppState, request.app.state.jayavatar)
