"""A real WebSocket client of a live session for the tests: records every message with its
arrival time, splits JSON events from the fragmented-MP4 bytes, and decodes what it got."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from shared import mp4


def fragment_times(data: bytes) -> list[tuple[int, int]]:
    """(track id, tfdt) of each traf in the moof boxes of `data`."""
    return [(r.track, r.decode_time) for r in mp4.runs(data)]


class LiveClient:
    def __init__(self, base_url: str, session_id: str) -> None:
        url = base_url.replace("http://", "ws://") + f"/v1/sessions/{session_id}/ws"
        self.ws: ClientConnection = connect(url, max_size=None, open_timeout=10)
        self.messages: list[tuple[float, Any]] = []  # (arrival, dict event | bytes)
        self.closed: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                item = json.loads(message) if isinstance(message, str) else bytes(message)
                with self._lock:
                    self.messages.append((time.monotonic(), item))
        except ConnectionClosed:
            pass
        code = self.ws.close_code
        self.closed = (code if code is not None else 1006, self.ws.close_reason or "")

    def send(self, message: dict[str, Any] | str | bytes) -> float:
        sent = time.monotonic()
        self.ws.send(json.dumps(message) if isinstance(message, dict) else message)
        return sent

    def events(self, kind: str | None = None) -> list[tuple[float, dict]]:
        with self._lock:
            return [(t, m) for t, m in self.messages
                    if isinstance(m, dict) and (kind is None or m.get("type") == kind)]

    def media(self) -> list[tuple[float, bytes]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if isinstance(m, bytes)]

    def wait_event(self, kind: str, timeout: float = 20, after: int = 0,
                   **match: Any) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for _, m in self.events(kind)[after:]
                     if all(m.get(k) == v for k, v in match.items())]
            if found:
                return found[0]
            if self.closed:
                raise AssertionError(f"socket closed {self.closed} while waiting for {kind}")
            time.sleep(0.02)
        raise AssertionError(f"no {kind} event {match} within {timeout} s; got "
                             f"{[m for _, m in self.events()][-10:]}")

    def push_audio(self, pcm: bytes, rate: int, channels: int = 1, *, line_id: str,
                   text: str | None = None, piece_ms: int = 20, speed: float = 1.0,
                   end: bool = True, **fields: Any) -> float:
        """Send an audio line: audio.start (with `fields`, e.g. emotion), binary messages of
        `piece_ms`, each when its audio starts at `speed` x real time (0: at once), then
        audio.end (unless `end` is False). Returns when the first binary message left."""
        start: dict[str, Any] = {"type": "audio.start", "id": line_id, "sample_rate": rate,
                                 "format": "s16le", "channels": channels, **fields}
        if text is not None:
            start["text"] = text
        self.send(start)
        step = 2 * channels * (rate * piece_ms // 1000)
        t0 = first = time.monotonic()
        for k, at in enumerate(range(0, len(pcm), step)):
            if speed > 0:
                time.sleep(max(0.0, t0 + at / (2 * channels * rate) / speed - time.monotonic()))
            sent = self.send(pcm[at:at + step])
            first = sent if k == 0 else first
        if end:
            self.send({"type": "audio.end", "id": line_id})
        return first

    def stream_bytes(self) -> bytes:
        return b"".join(m for _, m in self.media())

    def close(self) -> None:
        self.ws.close()
        self._reader.join(timeout=5)


def decode_audio(mp4: Path, rate: int = 16000) -> np.ndarray:
    """The stream's audio as float32 mono at `rate` (ffmpeg decodes the concatenated bytes)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-vn", "-ac", "1", "-ar",
                          str(rate), "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32)


def probe_streams(mp4: Path) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(mp4)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0

