"""The live-audio worker's side of audio lines, against a real Redis: PCM read from a session's
audio_in stream is forwarded to its speech stream piece by piece, resampled, in line order; a
stop drops what is left of a line; a worker taking a session over carries on a line whose start
it never saw; the stream holds only what is not yet forwarded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from services.audio.live import AudioSession
from services.audio.resample import Resampler
from shared import keys, live
from shared.leases import Lease
from shared.live_audio import STREAM_RATE, AudioIn, AudioStart
from shared.settings import Settings


@pytest.fixture
def conn(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(redis_server.url)
    yield c
    for key in c.scan_iter("ja:live:*"):
        c.delete(key)


class Running:
    """An AudioSession serving session `sid` in a thread (no Piper: audio lines only)."""

    def __init__(self, conn: redis.Redis, sid: str, tmp_path: Any) -> None:
        rec = live.SessionRecord(id=sid, avatar_id="a", created_at=time.time())
        conn.set(keys.live_session(sid), rec.model_dump_json(), ex=60)
        held = Lease(conn, keys.live_lease(sid, "audio"), "test", 30)
        assert held.claim()
        self.stopping = threading.Event()
        settings = Settings(redis_url="redis://unused", data_dir=tmp_path)
        self.session = AudioSession(conn, None, settings, rec, held, self.stopping)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.session.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def _start(conn: redis.Redis, sid: str, line: str, rate: int, text: str = "") -> str:
    fields = AudioStart(id=line, rate=rate, text=text).fields()
    return conn.xadd(keys.live_ctl(sid), fields).decode()


def _pcm(conn: redis.Redis, sid: str, line: str, ctl: str, rate: int, pcm: bytes) -> None:
    conn.xadd(keys.live_audio_in(sid), AudioIn(kind="pcm", line=line, ctl=ctl, rate=rate,
                                          pcm=pcm).fields())


def _end(conn: redis.Redis, sid: str, line: str, ctl: str, rate: int) -> None:
    conn.xadd(keys.live_audio_in(sid), AudioIn(kind="end", line=line, ctl=ctl, rate=rate).fields())


def _pieces(conn: redis.Redis, sid: str, line: str, timeout: float = 10) -> list[dict]:
    """The speech pieces of `line`, once its last one is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [{k.decode(): v for k, v in f.items()} for _, f in conn.xrange(keys.live_speech(sid))]
        mine = [f for f in got if f["line"].decode() == line]
        if mine and mine[-1]["last"] == b"1":
            return mine
        time.sleep(0.02)
    raise AssertionError(f"no last piece of {line} within {timeout} s")


def _tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def test_a_line_is_forwarded_piece_by_piece_resampled(conn: redis.Redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = _tone(16000, 1.0)
    pcm = np.round(x * 32767).astype("<i2").tobytes()
    run = Running(conn, "s1", tmp_path)
    try:
        ctl = _start(conn, "s1", "a1", 16000, text="a tone")
        for at in range(0, len(pcm), 640):  # 20 ms messages, at real time
            _pcm(conn, "s1", "a1", ctl, 16000, pcm[at:at + 640])
            time.sleep(0.02)
        _end(conn, "s1", "a1", ctl, 16000)
        pieces = _pieces(conn, "s1", "a1")
    finally:
        run.stop()
    assert len(pieces) > 20  # forwarded as it came, not at the end
    assert [int(p["seq"]) for p in pieces] == list(range(len(pieces)))
    assert pieces[0]["text"] == b"a tone" and all(p["text"] == b"" for p in pieces[1:])
    assert all(p["kind"] == b"audio" and int(p["rate"]) == STREAM_RATE for p in pieces)
    heard = np.concatenate([np.frombuffer(p["pcm"], "<i2") for p in pieces])
    whole = Resampler(16000, STREAM_RATE).process(x, final=True)
    assert len(heard) == len(whole) == STREAM_RATE
    assert np.abs(heard / 32767 - whole).max() < 1e-4
    assert conn.xlen(keys.live_audio_in("s1")) <= 1  # what was forwarded is trimmed


def test_lines_keep_their_order_and_a_stop_drops_the_rest(conn: redis.Redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    one = np.round(_tone(8000, 0.3) * 32767).astype("<i2").tobytes()
    run = Running(conn, "s2", tmp_path)
    try:
        first = _start(conn, "s2", "first", 8000)
        second = _start(conn, "s2", "second", 8000)  # queued behind the first
        _pcm(conn, "s2", "second", second, 8000, one)
        _end(conn, "s2", "second", second, 8000)
        time.sleep(0.3)
        assert conn.xlen(keys.live_speech("s2")) == 0  # the first line has not ended
        _pcm(conn, "s2", "first", first, 8000, one)
        _end(conn, "s2", "first", first, 8000)
        assert _pieces(conn, "s2", "second")
        lines = [f[b"line"] for _, f in conn.xrange(keys.live_speech("s2"))]
        assert lines.index(b"second") > max(i for i, n in enumerate(lines) if n == b"first")
        cut = _start(conn, "s2", "cut", 8000)
        _pcm(conn, "s2", "cut", cut, 8000, one)
        time.sleep(0.3)
        conn.xadd(keys.live_ctl("s2"), {"type": "stop"})
        time.sleep(0.2)
        before = conn.xlen(keys.live_speech("s2"))
        _pcm(conn, "s2", "cut", cut, 8000, one)  # in flight when the stop came
        _end(conn, "s2", "cut", cut, 8000)
        after = _start(conn, "s2", "after", 8000)
        _pcm(conn, "s2", "after", after, 8000, one)
        _end(conn, "s2", "after", after, 8000)
        assert _pieces(conn, "s2", "after")
    finally:
        run.stop()
    cut_pieces = [f for _, f in conn.xrange(keys.live_speech("s2")) if f[b"line"] == b"cut"]
    assert len(cut_pieces) <= before and not any(f[b"last"] == b"1" for f in cut_pieces)


def test_a_worker_taking_over_goes_on_where_the_dead_one_stopped(conn: redis.Redis, tmp_path
                                                                ) -> None:  # type: ignore[no-untyped-def]
    """A worker stops (as if killed) mid-line, with the audio of a line queued behind it read
    but not forwarded; the next one forwards the rest of the first line (no piece twice, none
    lost but for the ~1 ms its resampler held back) and then the queued line, whole."""
    half = np.round(_tone(24000, 0.5) * 32767).astype("<i2").tobytes()
    short = np.round(_tone(16000, 0.3) * 32767).astype("<i2").tobytes()
    first = Running(conn, "s3", tmp_path)
    try:
        one = _start(conn, "s3", "one", 24000)
        _pcm(conn, "s3", "one", one, 24000, half)
        two = _start(conn, "s3", "two", 16000)
        _pcm(conn, "s3", "two", two, 16000, short)
        _end(conn, "s3", "two", two, 16000)
        deadline = time.monotonic() + 10
        while not conn.xlen(keys.live_speech("s3")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # it has read line two's audio too, held until line one ends
    finally:
        first.stop()
    assert conn.xlen(keys.live_speech("s3")) >= 1
    conn.delete(keys.live_lease("s3", "audio"))  # its lease lapses
    _pcm(conn, "s3", "one", one, 24000, half)
    _end(conn, "s3", "one", one, 24000)
    second = Running(conn, "s3", tmp_path)
    try:
        pieces = _pieces(conn, "s3", "two")
    finally:
        second.stop()
    ones = [f for _, f in conn.xrange(keys.live_speech("s3")) if f[b"line"] == b"one"]
    assert [int(f[b"seq"]) for f in ones] == list(range(len(ones)))
    assert ones[-1][b"last"] == b"1"
    heard = sum(len(f[b"pcm"]) // 2 for f in ones)
    assert STREAM_RATE - 30 <= heard <= STREAM_RATE, heard
    assert sum(len(p["pcm"]) // 2 for p in pieces) == round(0.3 * STREAM_RATE)
