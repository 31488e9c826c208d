"""What route handlers need, taken from the app state built in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from fastapi import Request

from orchestrator.avatars import AvatarService
from orchestrator.media import MediaService
from orchestrator.settings import OrchestratorSettings
from shared.jobs import JobStore


@dataclass
class AppState:
    settings: OrchestratorSettings
    conn: redis.Redis
    store: JobStore
    avatars: AvatarService
    media: MediaService


def state(request: Request) -> AppState:
    return request.app.state.jayavatar
