"""The browser page: `/` serves static/index.html, `/static/<name>` its script and style."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from shared.errors import NotFound

router = APIRouter(tags=["web"], include_in_schema=False)

STATIC = Path(__file__).resolve().parents[2] / "static"
_NAME = re.compile(r"^[a-z0-9_-]{1,64}\.(html|js|css|svg|png|ico)$")
_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css",
          "svg": "image/svg+xml", "png": "image/png", "ico": "image/x-icon"}


def _file(name: str) -> FileResponse:
    path = STATIC / name
    match = _NAME.match(name)
    if match is None or not path.is_file():
        raise NotFound(f"no static file {name[:64]!r}", code="not_found")
    return FileResponse(path, media_type=_TYPES[match.group(1)],
                        headers={"Cache-Control": "no-cache"})


@router.get("/")
def index() -> FileResponse:
    return _file("index.html")


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    return _file(name)
