"""The parts of JayAvatar's HTTP API the service uses: upload a portrait as an avatar, open and
end a live session, connect to its WebSocket (README "Live sessions")."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

RETRY_503_S = 30.0  # how long a 503 (no worker yet, all slots busy) is retried at start
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=150)  # an upload waits for the face analysis


class JayAvatarError(Exception):
    """JayAvatar refused a request or closed the session; the message says which and why."""


@dataclass(frozen=True)
class LiveSession:
    """A live session as `POST /v1/sessions` made it."""

    id: str
    ws_url: str  # absolute ws:// or wss:// URL
    width: int
    height: int
    fps: int


class JayAvatarAPI:
    """A JayAvatar server at `base_url` (e.g. http://127.0.0.1:8000), with its `API_TOKEN`
    when it runs with one, over an aiohttp session the caller owns."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession,
                 api_token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._headers = {"Authorization": f"Bearer {api_token.strip()}"} if api_token else {}

    async def create_avatar(self, portrait: Path | bytes, name: str | None = None) -> str:
        """Upload a portrait (PNG or JPEG); the new avatar's id."""
        data = aiohttp.FormData()
        raw = portrait.read_bytes() if isinstance(portrait, Path) else portrait
        filename = portrait.name if isinstance(portrait, Path) else "portrait.png"
        data.add_field("portrait", raw, filename=filename)
        if name:
            data.add_field("name", name)
        body = await self._request("POST", "/v1/avatars", data=data)
        return str(body["id"])

    async def create_session(self, avatar_id: str, **options: Any) -> LiveSession:
        """A live session of `avatar_id`; `options` as `POST /v1/sessions` takes them (`size`,
        `fps`, `renderer`, `aspect`, `framing`). A 503 (no live worker yet, every slot taken)
        is retried for RETRY_503_S."""
        payload = {"avatar_id": avatar_id, **{k: v for k, v in options.items() if v is not None}}
        body = await self._request("POST", "/v1/sessions", json=payload, retry_s=RETRY_503_S)
        ws = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return LiveSession(id=str(body["id"]), ws_url=ws + str(body["ws_url"]),
                           width=int(body["width"]), height=int(body["height"]),
                           fps=int(body.get("options", {}).get("fps") or 25))

    async def delete_session(self, session_id: str) -> None:
        async with self._http.delete(f"{self.base_url}/v1/sessions/{session_id}",
                                     headers=self._headers,
                                     timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status not in (204, 404):
                raise JayAvatarError(f"DELETE session {session_id}: {resp.status} "
                                     f"{await resp.text()}")

    async def connect(self, session: LiveSession) -> aiohttp.ClientWebSocketResponse:
        return await self._http.ws_connect(session.ws_url, headers=self._headers,
                                           max_msg_size=0, heartbeat=None,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=5.0))

    async def _request(self, method: str, path: str, retry_s: float = 0.0,
                       **kwargs: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_s
        while True:
            async with self._http.request(method, self.base_url + path, headers=self._headers,
                                          timeout=REQUEST_TIMEOUT, **kwargs) as resp:
                if resp.status in (200, 201):
                    body: dict[str, Any] = await resp.json()
                    return body
                text = await resp.text()
                if resp.status != 503 or loop.time() >= deadline:
                    raise JayAvatarError(f"{method} {path}: {resp.status} {text}")
            await asyncio.sleep(1.0)
