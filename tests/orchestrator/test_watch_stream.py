"""GET /v1/jobs/{id}/stream against a real API (create_app under uvicorn in a thread, a real
Redis): compose pieces cut by shared/mp4.py from a real fragmented MP4 that ffmpeg made are
published into the job's folder as the contract says (segment renamed into place, then its meta)
from a background thread while a client reads. The bytes arrive as they are published, in
order; the stream decodes to every frame; end.json, the job's end and the idle limit end it;
refusals are 404/409/503 sentences; and clients that leave or wait cost no thread."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from conftest import clear_db, free_port
from pydantic import SecretStr

from orchestrator.api.routes import watch
from orchestrator.app import create_app
from orchestrator.settings import OrchestratorSettings
from shared import keys
from shared.layout import Layout
from shared.models import JobOptions, JobRecord
from shared.mp4 import boxes

ROOT = Path(__file__).resolve().parents[2]
DB = 11  # away from the other suites' databases
SECONDS, FPS = 6, 25


@pytest.fixture(scope="module")
def fmp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[bytes], int]:
    """(init, segments, frames) of a real fragmented MP4: H.264 with a keyframe each second
    and AAC-LC, fragmented at keyframes (one moof+mdat per second)."""
    out = tmp_path_factory.mktemp("fmp4") / "out.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=128x128:rate={FPS}", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS),
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS),
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags",
                    "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(out)],
                   check=True)
    data = out.read_bytes()
    found = boxes(data)
    kinds = [b.kind for b in found]
    assert kinds[:2] == ["ftyp", "moov"], kinds
    init = data[:found[1].start + found[1].size]
    segments = [data[moof.start:mdat.start + mdat.size]
                for moof, mdat in zip(found, found[1:], strict=False)
                if moof.kind == "moof" and mdat.kind == "mdat"]
    assert len(segments) == SECONDS, kinds
    return init, segments, _frames(out)


def _frames(path: Path) -> int:
    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                           "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
                           str(path)], check=True, capture_output=True, text=True)
    return int(done.stdout.strip())


class Server:
    """The API app under uvicorn in a thread of this process, so a test can read its logs."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture(scope="module")
def conn(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(_db_url(redis_server))
    clear_db(c)
    yield c
    clear_db(c)
    c.close()


def _db_url(redis_server: Any) -> str:
    return str(redis_server.url).rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("watch-data")


@pytest.fixture(scope="module")
def api(redis_server, conn: redis.Redis, data_dir: Path) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    settings = OrchestratorSettings(redis_url=_db_url(redis_server), data_dir=data_dir,
                                    models_dir=ROOT / "models", run_reconciler=False,
                                    min_free_mb=0)
    with Server(settings) as server:
        yield server


class Log(logging.Handler):
    """The watch route's log lines, to see a stream's task end on the server."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def wait_for(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no log line with {text!r}: {self.lines}"
            time.sleep(0.05)


@pytest.fixture
def log() -> Iterator[Log]:
    handler, logger = Log(), logging.getLogger(watch.__name__)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class Job:
    """A job record in Redis, stored as JobStore stores it, and its compose pieces on disk,
    published as the compose stage publishes them (atomic renames, the meta after the data)."""

    def __init__(self, conn: redis.Redis, data_dir: Path, status: str = "running") -> None:
        self.conn, self.layout = conn, Layout(data_dir)
        self.rec = JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 16, text="Hello.",
                             options=JobOptions(), status="queued", stage="audio")
        self.set(status, stage="compose" if status != "queued" else "audio")
        self.dir = self.layout.pieces_dir(self.id, "compose")
        self.written: list[float] = []  # when each segment's meta went in

    @property
    def id(self) -> str:
        return self.rec.id

    @property
    def url(self) -> str:
        return f"/v1/jobs/{self.id}/stream"

    def set(self, status: str, stage: str = "compose", error: str | None = None) -> None:
        self.rec = self.rec.model_copy(update={"status": status, "stage": stage,
                                               "error": error})
        self.conn.hset(keys.job(self.id), mapping=self.rec.to_hash())

    def _put(self, name: str, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.dir / name)

    def init(self, data: bytes) -> None:
        self._put("init.mp4", data)

    def segment(self, n: int, data: bytes) -> None:
        self._put(f"seg_{n:05d}.m4s", data)
        meta = {"n": n, "start": n * FPS, "stop": (n + 1) * FPS, "t": float(n),
                "duration": 1.0, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self._put(f"seg_{n:05d}.json", json.dumps(meta).encode())
        self.written.append(time.monotonic())

    def end(self, segments: int) -> None:
        self._put("end.json", json.dumps({"segments": segments}).encode())

    def result(self, data: bytes) -> None:
        folder = self.layout.stage_dir(self.id, "compose")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.mp4").write_bytes(data)


def test_bytes_arrive_as_segments_are_published_and_decode_whole(
        api: Server, conn: redis.Redis, data_dir: Path, fmp4: tuple[bytes, list[bytes], int],
        tmp_path: Path) -> None:
    init, segments, frames = fmp4
    job = Job(conn, data_dir)
    got_first = threading.Event()
    problems: list[str] = []

    def compose() -> None:  # publishes as the compose stage does, a segment every 0.3 s
        time.sleep(0.3)  # the client is already waiting: nothing is on disk yet
        job.init(init)
        job.segment(0, segments[0])
        if not got_first.wait(10):
            problems.append("the client had no bytes 10 s after segment 0 was published")
        for n, data in enumerate(segments[1:], start=1):
            time.sleep(0.3)
            job.segment(n, data)
        job.end(len(segments))

    writer = threading.Thread(target=compose)
    received, arrivals = bytearray(), list[tuple[float, int]]()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        writer.start()
        with client.stream("GET", job.url) as resp:
            assert resp.status_code == 200, resp.read()
            assert resp.headers["content-type"] == "video/mp4"
            assert resp.headers["cache-control"] == "no-store"
            assert "content-length" not in resp.headers
            assert resp.headers["transfer-encoding"] == "chunked"
            for chunk in resp.iter_bytes():
                received += chunk
                arrivals.append((time.monotonic(), len(received)))
                if len(received) >= len(init) + len(segments[0]):
                    got_first.set()
        ended = time.monotonic()
    writer.join(10)
    assert not problems, problems
    assert bytes(received) == init + b"".join(segments)  # everything, once, in order
    # segment 0 was there before segment 1 was written, and each segment soon after its meta
    first_whole = next(t for t, size in arrivals if size >= len(init) + len(segments[0]))
    assert first_whole < job.written[1], (first_whole, job.written)
    assert first_whole - job.written[0] < 1.0, (first_whole, job.written)
    # end.json ended it (the record still says running), without waiting for the job's end
    assert ended - job.written[-1] < 2.0, (ended, job.written)
    out = tmp_path / "watched.mp4"
    out.write_bytes(received)
    assert _frames(out) == frames == SECONDS * FPS


def test_a_job_that_ends_ends_its_stream(api: Server, conn: redis.Redis, data_dir: Path,
                                         fmp4: tuple[bytes, list[bytes], int]) -> None:
    """No end.json: a job that fails mid-compose ends the stream after its last segment."""
    init, segments, _ = fmp4
    job = Job(conn, data_dir)
    job.init(init)
    job.segment(0, segments[0])
    job.segment(1, segments[1])

    def fail() -> None:
        time.sleep(0.5)
        job.set("failed", error="compose: ffmpeg crashed")

    threading.Thread(target=fail).start()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        started = time.monotonic()
        resp = client.get(job.url)
        took = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.content == init + segments[0] + segments[1]
    assert 0.4 < took < 3.0, took


def test_a_finished_job_streams_its_segments_then_ends(
        api: Server, conn: redis.Redis, data_dir: Path,
        fmp4: tuple[bytes, list[bytes], int]) -> None:
    init, segments, _ = fmp4
    job = Job(conn, data_dir, status="succeeded")
    job.init(init)
    for n, data in enumerate(segments):
        job.segment(n, data)
    job.end(len(segments))
    with httpx.Client(base_url=api.url, timeout=30) as client:
        resp = client.get(job.url)
    assert resp.status_code == 200
    assert resp.content == init + b"".join(segments)


def test_a_job_without_segments_streams_its_result(
        api: Server, conn: redis.Redis, data_dir: Path,
        fmp4: tuple[bytes, list[bytes], int]) -> None:
    """Compose options that need the whole input publish no segments; the stream waits and
    then sends the result (larger than one read, to cross chunk edges)."""
    init, segments, _ = fmp4
    result = (init + b"".join(segments)) * 20
    job = Job(conn, data_dir)

    def finish() -> None:
        time.sleep(0.5)
        job.result(result)
        job.set("succeeded")

    threading.Thread(target=finish).start()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        resp = client.get(job.url)
    assert resp.status_code == 200, resp.text
    assert len(resp.content) == len(result) and resp.content == result


def test_unknown_job_is_404(api: Server) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for job_id in (uuid.uuid4().hex, "not-a-job"):
            resp = client.get(f"/v1/jobs/{job_id}/stream")
            assert resp.status_code == 404
            assert resp.json()["error"] == "job_not_found"
            assert "no job with id" in resp.json()["message"]


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_a_job_that_ended_before_any_segment_is_409(api: Server, conn: redis.Redis,
                                                    data_dir: Path, status: str) -> None:
    job = Job(conn, data_dir)
    job.set(status, stage="visual", error="visual: the face could not be found")
    with httpx.Client(base_url=api.url, timeout=30) as client:
        resp = client.get(job.url)
    assert resp.status_code == 409
    body = resp.json()
    assert body["error"] == "nothing_to_watch"
    assert body["message"] == (
        f"job {job.id} {status} during visual before it had any video to watch: visual: the "
        f"face could not be found. Nothing was made; see GET /v1/jobs/{job.id} and submit it "
        "again.")


def test_a_job_that_fails_while_a_client_waits_is_409(api: Server, conn: redis.Redis,
                                                      data_dir: Path,
                                                      fmp4: tuple[bytes, list[bytes], int]
                                                      ) -> None:
    """The status line waits for segment 0: init alone is no video, so a failure after it is
    still a 409, not an empty 200."""
    job = Job(conn, data_dir)
    job.init(fmp4[0])

    def fail() -> None:
        time.sleep(0.5)
        job.set("failed", error="compose: out of memory")

    threading.Thread(target=fail).start()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        resp = client.get(job.url)
    assert resp.status_code == 409
    assert resp.json()["message"].endswith("before it had any video to watch: compose: out of "
                                           f"memory. Nothing was made; see GET /v1/jobs/{job.id}"
                                           " and submit it again.")


def test_clients_that_leave_free_their_streams(api: Server, conn: redis.Redis, data_dir: Path,
                                               fmp4: tuple[bytes, list[bytes], int],
                                               log: Log) -> None:
    init, segments, _ = fmp4
    job = Job(conn, data_dir)
    job.init(init)
    job.segment(0, segments[0])
    with httpx.Client(base_url=api.url, timeout=30) as client:
        # mid-stream: the client reads segment 0, then hangs up while the job runs on
        with client.stream("GET", job.url) as resp:
            assert resp.status_code == 200
            first = next(resp.iter_bytes())
            assert init.startswith(first[:len(init)])
        log.wait_for(f"job {job.id}: watch stream left by its client")
        # before the first byte: a client that gives up while the job is queued
        queued = Job(conn, data_dir, status="queued")
        with pytest.raises(httpx.ReadTimeout):
            client.get(queued.url, timeout=httpx.Timeout(30, read=0.5))
        log.wait_for(f"job {queued.id}: watch stream left by its client")
        # the server goes on serving, and the job's stream goes on for a new client
        job.end(1)
        assert client.get(job.url).content == init + segments[0]


def test_nothing_new_for_the_idle_limit_ends_the_stream(
        api: Server, conn: redis.Redis, data_dir: Path, fmp4: tuple[bytes, list[bytes], int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    init, segments, _ = fmp4
    monkeypatch.setattr(watch, "IDLE_LIMIT_S", 1.0)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        queued = Job(conn, data_dir, status="queued")
        resp = client.get(queued.url)
        assert resp.status_code == 503
        assert resp.json()["error"] == "nothing_yet"
        assert f"/v1/jobs/{queued.id}/events" in resp.json()["message"]
        assert int(resp.headers["retry-after"]) > 0
        stuck = Job(conn, data_dir)
        stuck.init(init)
        stuck.segment(0, segments[0])
        started = time.monotonic()
        resp = client.get(stuck.url)
        assert resp.status_code == 200 and resp.content == init + segments[0]
        assert 0.9 < time.monotonic() - started < 5.0


def test_many_waiting_watchers_hold_no_thread_and_little_redis(
        api: Server, conn: redis.Redis, data_dir: Path,
        fmp4: tuple[bytes, list[bytes], int]) -> None:
    init, segments, _ = fmp4
    job = Job(conn, data_dir)
    watchers, wait_s = 100, 2.0

    def hmgets() -> int:
        stats = conn.info("commandstats").get("cmdstat_hmget", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    async def watch_all() -> list[bytes]:
        limits = httpx.Limits(max_connections=watchers + 10)
        async with httpx.AsyncClient(base_url=api.url, timeout=30, limits=limits) as client:
            tasks = [asyncio.create_task(client.get(job.url)) for _ in range(watchers)]
            await asyncio.sleep(1.0)  # every watcher connected and waiting
            threads, calls = threading.active_count(), hmgets()
            await asyncio.sleep(wait_s)
            assert threading.active_count() <= threads, "waiting watchers started threads"
            per_watcher_s = (hmgets() - calls) / watchers / wait_s
            assert per_watcher_s <= 1 / watch.STATUS_EVERY_S + 0.5, per_watcher_s
            job.init(init)
            job.segment(0, segments[0])
            job.end(1)
            return [(await t).content for t in tasks]

    before = threading.active_count()
    bodies = asyncio.run(watch_all())
    assert all(body == init + segments[0] for body in bodies)
    assert threading.active_count() <= before + 40  # at most anyio's shared pool of readers


def _cli(url: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`jayavatar --server url ARGS` as a user runs it; players draw to SDL's dummy drivers."""
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy",
           "PATH": path if path is not None else os.environ.get("PATH", "")}
    env.pop("JAYAVATAR_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "--server", url, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def _publish_later(job: Job, init: bytes, segments: list[bytes]) -> threading.Thread:
    def compose() -> None:
        time.sleep(0.5)
        job.init(init)
        for n, data in enumerate(segments):
            job.segment(n, data)
            time.sleep(0.3)
        job.end(len(segments))
        job.set("succeeded")

    thread = threading.Thread(target=compose)
    thread.start()
    return thread


def test_cli_play_plays_the_stream_in_ffplay(api: Server, conn: redis.Redis, data_dir: Path,
                                             fmp4: tuple[bytes, list[bytes], int],
                                             log: Log) -> None:
    if shutil.which("ffplay") is None:
        pytest.fail("ffplay is not installed; run `make setup` (the ffmpeg package has it)")
    init, segments, _ = fmp4
    job = Job(conn, data_dir)
    writer = _publish_later(job, init, segments[:2])
    started = time.monotonic()
    done = _cli(api.url, "play", job.id)
    writer.join(10)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started > 2.0  # ffplay showed the 2 s in real time, then closed
    assert f"playing the job as it renders with ffplay ({api.url}{job.url})" in done.stderr
    # ffplay read it all: the server's stream ended by itself, not by ffplay hanging up
    size = len(init) + len(segments[0]) + len(segments[1])
    log.wait_for(f"job {job.id}: watch stream ended after")
    assert any(line.startswith(f"job {job.id}: watch stream ended after")
               and line.endswith(f", {size} bytes") for line in log.lines), log.lines


def test_cli_play_sends_the_token_and_says_why_a_job_failed(
        redis_server, conn: redis.Redis, data_dir: Path,  # type: ignore[no-untyped-def]
        fmp4: tuple[bytes, list[bytes], int], log: Log) -> None:
    token = "watch-token-" + uuid.uuid4().hex
    settings = OrchestratorSettings(redis_url=_db_url(redis_server), data_dir=data_dir,
                                    models_dir=ROOT / "models", run_reconciler=False,
                                    min_free_mb=0, api_token=SecretStr(token))
    init, segments, _ = fmp4
    with Server(settings) as guarded:
        job = Job(conn, data_dir)
        writer = _publish_later(job, init, segments[:1])
        done = _cli(guarded.url, "--token", token, "play", job.id)
        writer.join(10)
        assert done.returncode == 0, done.stderr
        log.wait_for(f"job {job.id}: watch stream ended after")
        # a job that fails before any video: ffplay gets the 409, the CLI says why
        failed = Job(conn, data_dir)
        failed.set("failed", stage="audio", error="audio: the voice model is missing")
        done = _cli(guarded.url, "--token", token, "play", failed.id)
        assert done.returncode == 1
        assert "job failed: audio: the voice model is missing" in done.stderr


def test_cli_play_without_a_player_prints_the_url(api: Server, conn: redis.Redis,
                                                  data_dir: Path) -> None:
    job = Job(conn, data_dir)
    done = _cli(api.url, "play", job.id, path=str(Path(sys.executable).parent / "no-such-dir"))
    assert done.returncode == 0, done.stderr
    assert "neither ffplay nor mpv is on PATH" in done.stderr
    assert f"open the stream in a player: {api.url}{job.url}\n" in done.stderr
