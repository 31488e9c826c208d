"""Request bodies are refused by size before they are parsed.

A pure ASGI middleware: a body whose Content-Length is over the limit gets `413` before a byte of
it is read (one within it passes untouched: the server delivers no more than declared); a body
sent without a length (chunked) is counted as it streams and refused as soon as it passes the
limit, so neither a multipart upload (spooled to a temp file by the form parser)
nor a JSON body (held in memory) can grow past it. Multipart bodies may carry two files of
MAX_UPLOAD_MB (a portrait and a voice sample), an upload to /v1/media one recording of speech of
MAX_SPEECH_UPLOAD_MB; every other body is JSON, at most MAX_JSON_KB.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.settings import OrchestratorSettings

logger = logging.getLogger(__name__)

FORM_OVERHEAD = 1024 * 1024  # field names, boundaries and small form fields of a multipart body


class BodyTooLarge(Exception):
    """Raised into the app from `receive` when a streamed body passes the limit."""


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        st = getattr(app.state, "jayavatar", None) if app is not None else None
        if scope["type"] != "http" or st is None:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        limit, what = _limit(st.settings, headers.get(b"content-type", b""), scope["path"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(scope, receive, send, 400, "bad_content_length",
                              "the Content-Length header is not a number of bytes")
                return
            if int(declared) > limit:
                logger.warning("refused %s %s: Content-Length %s over %d", scope["method"],
                               scope["path"], declared.decode(), limit)
                await _refuse(scope, receive, send, 413, "body_too_large",
                              f"the request body is {_size(int(declared))}; {what}")
                return
        if b"transfer-encoding" not in headers:  # the server delivers no more than declared
            await self.app(scope, receive, send)  # (and without a length, there is no body)
            return
        await self._streamed(scope, receive, send, limit, what)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int,
                        what: str) -> None:
        """Run the app, counting the body as it arrives; past `limit`, answer 413 instead."""
        seen = 0
        over = started = False

        async def counted_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise BodyTooLarge(f"body passed {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # the app's own answer to the cut-off body is replaced by the 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:  # BodyTooLarge itself, or whatever the app made of it
            if not over:
                raise
        if over and not started:
            logger.warning("refused %s %s: body streamed past %d bytes", scope["method"],
                           scope["path"], limit)
            await _refuse(scope, receive, send, 413, "body_too_large",
                          f"the request body grew past {_size(limit)} while it was sent; {what}")


def _limit(s: OrchestratorSettings, content_type: bytes, path: str) -> tuple[int, str]:
    """The most bytes a body of this type may have, and a sentence saying so."""
    multipart = content_type.lower().startswith(b"multipart/")
    speech = s.max_speech_upload_bytes
    if multipart and path.rstrip("/") == "/v1/media" and speech > 2 * s.max_upload_bytes:
        limit = speech + FORM_OVERHEAD
        return limit, (f"an upload may be at most {_size(limit)} (a recording of speech at most "
                       f"{s.max_speech_upload_mb:g} MB, other media {s.max_upload_mb:g} MB); "
                       "send a smaller file")
    if multipart:
        limit = 2 * s.max_upload_bytes + FORM_OVERHEAD
        return limit, (f"an upload may be at most {_size(limit)} (each file at most "
                       f"{s.max_upload_mb:g} MB); send a smaller file")
    return s.max_json_bytes, f"a JSON body may be at most {_size(s.max_json_bytes)}"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                  message: str) -> None:
    response = JSONResponse({"error": code, "message": message}, status_code=status,
                            headers={"Connection": "close"})
    await response(scope, receive, send)
