"""The API's error paths in-process (create_app(settings) under Starlette's TestClient, a real
Redis, no workers): every refusal is a 4xx (or the 503/507 that says what to wait for) with a
JSON {error, message} sentence, never a 5xx or a traceback, and leaves nothing behind.
tests/orchestrator/test_api_errors.py checks the same through a real server and real workers."""

from __future__ import annotations

import io
import json
import struct
import uuid
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import clear_db

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from orchestrator.app import create_app
from orchestrator.settings import OrchestratorSettings
from shared import keys
from shared.checkpoint import write_manifest
from shared.jobs import JobStore
from shared.models import AvatarRecord, JobOptions, JobRecord
from shared.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[2]
PORTRAIT = (ROOT / "tests" / "data" / "portrait.png").read_bytes()
DB = 10  # away from the other suites' databases
BASE = "http://127.0.0.1:8000"


def _settings(url: str, data_dir: Path, **extra: Any) -> OrchestratorSettings:
    return OrchestratorSettings(redis_url=url, data_dir=data_dir, models_dir=ROOT / "models",
                                run_reconciler=False, max_upload_mb=2, min_free_mb=0, **extra)


def _db_url(redis_server: Any) -> str:
    return str(redis_server.url).rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture(scope="module")
def conn(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    c = redis.Redis.from_url(_db_url(redis_server))
    clear_db(c)
    yield c
    clear_db(c)
    c.close()




@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-data")


@pytest.fixture(scope="module")
def api(redis_server, conn: redis.Redis, data_dir: Path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(create_app(_settings(_db_url(redis_server), data_dir)), base_url=BASE,
                    raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def avatar_id(conn: redis.Redis) -> str:
    """An avatar record as the analysis stores it (the visual worker is not running here)."""
    rec = AvatarRecord(id=uuid.uuid4().hex[:16], width=512, height=512,
                       face_box=(180, 150, 150, 190), faces_found=1, portrait_sha256="0" * 64)
    conn.set(keys.avatar(rec.id), rec.model_dump_json())
    conn.zadd(keys.AVATARS, {rec.id: rec.created_at})
    return rec.id


def _assert_error(resp: Any, status: int, *words: str) -> dict[str, str]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message"}, body
    assert "Traceback" not in body["message"] and len(body["message"]) > 20
    for word in words:
        assert word in body["message"].lower(), body["message"]
    return body


def _png(width: int, height: int) -> bytes:
    row = b"\x00" + b"\x80\x80\x80" * width
    return _png_with(struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0),
                     zlib.compress(row * height))


def _png_with(ihdr: bytes, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def _bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height`; the pixels are never sent."""
    return _png_with(struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0),
                     zlib.compress(b"\x00" * 64))


def _animated_png() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (128, 128), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


# ---- avatars: refused before any analysis ----------------------------------------------------

AVATAR_CASES: list[tuple[str, dict[str, tuple[str, bytes]], int, tuple[str, ...]]] = [
    ("not an image", {"portrait": ("me.png", b"hello, I am text")}, 415, ("png", "jpeg")),
    ("gif", {"portrait": ("a.gif", b"GIF89a" + b"\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 40)},
     415, ("png", "jpeg")),
    ("1x1 image", {"portrait": ("dot.png", _png(1, 1))}, 422, ("at least",)),
    ("truncated image", {"portrait": ("cut.png", PORTRAIT[:5000])}, 422, ("damaged",)),
    ("empty file", {"portrait": ("empty.png", b"")}, 422, ("empty",)),
    ("path-like name", {"portrait": ("../../etc/passwd.png", _png(64, 64))}, 400,
     ("plain file",)),
    ("oversized", {"portrait": ("big.png", b"\x89PNG" + b"\x00" * (3 * 1024 * 1024))}, 413,
     ("larger than",)),
    ("20000x20000 header", {"portrait": ("huge.png", _bomb(20000, 20000))}, 413,
     ("too many pixels", "8192")),
    ("missing portrait field", {"photo": ("p.png", _png(64, 64))}, 422, ("portrait",)),
    ("voice not audio", {"portrait": ("p.png", PORTRAIT),
                         "voice_sample": ("v.wav", b"RIFF....not really")}, 415, ("audio",)),
]


@pytest.mark.parametrize("name,files,status,words", AVATAR_CASES,
                         ids=[c[0] for c in AVATAR_CASES])
def test_bad_avatar_uploads(api: TestClient, data_dir: Path, conn: redis.Redis, name: str,
                            files: dict[str, tuple[str, bytes]], status: int,
                            words: tuple[str, ...]) -> None:
    _assert_error(api.post("/v1/avatars", files=files), status, *words)
    assert [p.name for p in (data_dir / "avatars").iterdir()] == []
    assert conn.zcard(keys.AVATARS) <= 1  # only the module's own avatar record
    assert conn.llen("rq:queue:avatar") == 0, "a refused upload was sent for analysis"


def test_an_animated_portrait_is_refused(api: TestClient) -> None:
    _assert_error(api.post("/v1/avatars", files={"portrait": ("a.png", _animated_png())}),
                  422, "animated")


def test_a_broken_multipart_body_is_refused(api: TestClient) -> None:
    _assert_error(api.post("/v1/avatars", content=b"--x\r\nbroken",
                           headers={"content-type": "multipart/form-data; boundary=x"}),
                  422, "portrait")


# ---- jobs: submission --------------------------------------------------------------------------

JOB_CASES: list[tuple[Any, int, tuple[str, ...]]] = [
    ({"text": "hi"}, 422, ("avatar_id", "required")),
    ({"avatar_id": "AVATAR", "text": ""}, 422, ("empty",)),
    ({"avatar_id": "AVATAR", "text": "   \n "}, 422, ("empty",)),
    ({"avatar_id": "AVATAR", "text": "x" * 5001}, 422, ("5001", "5000")),
    ({"avatar_id": "AVATAR", "text": "?!..."}, 422, ("letters",)),
    ({"avatar_id": "0123456789abcdef", "text": "hi"}, 404, ("no avatar",)),
    ({"avatar_id": "AVATAR", "text": "hi", "voice": "sam"}, 422, ("piper", "expected one of")),
    ({"avatar_id": "AVATAR", "text": "hi", "renderer": "deepfake"}, 422, ("portrait",)),
    ({"avatar_id": "AVATAR", "text": "hi", "voice": "piper-match"}, 422, ("voice sample",)),
    ({"avatar_id": "AVATAR", "text": "hi", "fps": 1000}, 422, ("fps",)),
    ({"avatar_id": "AVATAR", "text": "hi", "size": 99999}, 422, ("size",)),
    ({"avatar_id": "AVATAR", "text": 42}, 422, ("text",)),
    ({"avatar_id": "AVATAR", "text": "hi", "colour": "red"}, 422, ("colour", "not a known")),
    ({"avatar_id": "AVATAR", "text": "hi", "background": "red"}, 422, ("#rrggbb",)),
    ({"avatar_id": "AVATAR", "text": "hi", "music": "song.mp3"}, 422, ("media:",)),
    ({"avatar_id": "AVATAR", "text": "hi", "background": "media:0123456789abcdef"}, 404,
     ("not an upload", "post /v1/media")),
    ({"avatar_id": "AVATAR", "text": "hi", "speed": "fast"}, 422, ("speed",)),
    ({"avatar_id": "A" * 500, "text": "hi"}, 422, ("avatar_id",)),
    ([1, 2, 3], 422, ("body",)),
]


@pytest.mark.parametrize("body,status,words", JOB_CASES,
                         ids=[str(i) for i in range(len(JOB_CASES))])
def test_bad_job_requests(api: TestClient, conn: redis.Redis, avatar_id: str, body: Any,
                          status: int, words: tuple[str, ...]) -> None:
    if isinstance(body, dict) and body.get("avatar_id") == "AVATAR":
        body = {**body, "avatar_id": avatar_id}
    before = conn.zcard(keys.ALL_JOBS)
    _assert_error(api.post("/v1/jobs", json=body), status, *words)
    assert conn.zcard(keys.ALL_JOBS) == before, "a refused submission stored a job"


def test_a_good_submission_is_accepted_and_queued(api: TestClient, conn: redis.Redis,
                                                  avatar_id: str) -> None:
    resp = api.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Hello there."})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.headers["location"] == f"/v1/jobs/{job_id}"
    assert keys.rq_job_id(job_id, "audio", 1).encode() in conn.lrange("rq:queue:audio", 0, -1)
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_broken_json_and_non_utf8(api: TestClient) -> None:
    headers = {"content-type": "application/json"}
    _assert_error(api.post("/v1/jobs", content=b'{"text": ', headers=headers), 422, "json")
    _assert_error(api.post("/v1/jobs", content=b'{"text": "\xff\xfe"}', headers=headers),
                  400, "utf-8")


def test_a_json_body_past_its_limit(api: TestClient, avatar_id: str) -> None:
    body = {"avatar_id": avatar_id, "text": "word " * 60_000}  # ~300 KB, limit 256 KB
    _assert_error(api.post("/v1/jobs", json=body), 413)


def test_idempotency_key_errors(api: TestClient, avatar_id: str) -> None:
    body = {"avatar_id": avatar_id, "text": "Hello."}
    _assert_error(api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "x" * 300}),
                  400, "idempotency-key")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.post("/v1/jobs", json=body, headers=key)
    assert first.status_code == 202, first.text
    again = api.post("/v1/jobs", json=body, headers=key)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    _assert_error(api.post("/v1/jobs", json={**body, "text": "Other words."}, headers=key),
                  422, "different request", first.json()["id"])


# ---- jobs: reading, cancel, results ------------------------------------------------------------

def _stored_job(conn: redis.Redis, data_dir: Path, avatar_id: str, **options: Any) -> JobRecord:
    store = JobStore(conn, data_dir)
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id=avatar_id, text="Hello.",
                    options=JobOptions(**options), engines={"audio": "piper"})
    return store.create(rec)[0]


def _succeed(conn: redis.Redis, data_dir: Path, job_id: str) -> None:
    store = JobStore(conn, data_dir)
    for stage in STAGES:
        assert store.start_stage(job_id, stage, 1, "e", "w") is not None
        store.complete_stage(job_id, stage, "e", engine="e", skipped=False)


def test_unknown_ids_and_statuses(api: TestClient) -> None:
    _assert_error(api.get("/v1/jobs/ffff"), 404, "no job")
    _assert_error(api.get("/v1/jobs/../../etc"), 404)
    _assert_error(api.get("/v1/jobs/not-hex!"), 404, "no job")
    _assert_error(api.post("/v1/jobs/ffff/cancel"), 404, "no job")
    _assert_error(api.get("/v1/jobs/ffff/result"), 404, "no job")
    _assert_error(api.get("/v1/avatars/nothere"), 404, "no avatar")
    _assert_error(api.delete("/v1/avatars/0123456789abcdef"), 404, "no avatar")
    _assert_error(api.get("/v1/jobs?status=bogus"), 422, "expected one of")
    _assert_error(api.get("/v1/jobs?limit=0"), 422, "limit")


def test_results_before_success_and_after_loss(api: TestClient, conn: redis.Redis,
                                               data_dir: Path, avatar_id: str) -> None:
    queued = _stored_job(conn, data_dir, avatar_id)
    _assert_error(api.get(f"/v1/jobs/{queued.id}/result"), 409, "queued", "succeeded")
    _assert_error(api.get(f"/v1/jobs/{queued.id}/captions"), 404, "without captions")
    done = _stored_job(conn, data_dir, avatar_id, captions="srt")
    _succeed(conn, data_dir, done.id)  # succeeded, but no compose output on disk
    _assert_error(api.get(f"/v1/jobs/{done.id}/result"), 410, "no longer on disk")
    _assert_error(api.get(f"/v1/jobs/{done.id}/captions"), 410)
    compose = data_dir / "jobs" / done.id / "compose"
    compose.mkdir(parents=True)
    (compose / "result.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"\1" * 100)
    _assert_error(api.get(f"/v1/jobs/{done.id}/result"), 410)  # no manifest: never served
    write_manifest(compose, {"stage": "compose", "job_id": done.id, "engine": "ffmpeg",
                             "engine_version": "1", "input_hash": "h", "execution_id": "e"},
                   ["result.mp4"])
    served = api.get(f"/v1/jobs/{done.id}/result")
    assert served.status_code == 200 and served.content == (compose / "result.mp4").read_bytes()
    _assert_error(api.get(f"/v1/jobs/{done.id}/captions"), 410, "no captions.srt")
    _assert_error(api.post(f"/v1/jobs/{done.id}/cancel"), 409, "already succeeded")
    failed = _stored_job(conn, data_dir, avatar_id)
    JobStore(conn, data_dir).fail_stage(failed.id, "audio", None, "the voice broke",
                                        permanent=True)
    _assert_error(api.get(f"/v1/jobs/{failed.id}/result"), 409, "failed: the voice broke")
    _assert_error(api.post(f"/v1/jobs/{failed.id}/cancel"), 409, "already failed")


def test_cancel_through_the_api(api: TestClient, conn: redis.Redis, data_dir: Path,
                                avatar_id: str) -> None:
    rec = _stored_job(conn, data_dir, avatar_id)
    resp = api.post(f"/v1/jobs/{rec.id}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "canceled"
    again = api.post(f"/v1/jobs/{rec.id}/cancel")  # canceling twice is harmless
    assert again.status_code == 200 and again.json()["status"] == "canceled"


def test_a_damaged_record_is_listed_and_read_never_500(api: TestClient, conn: redis.Redis,
                                                       data_dir: Path, avatar_id: str) -> None:
    rec = _stored_job(conn, data_dir, avatar_id)
    conn.hset(keys.job(rec.id), "options", "{not json")
    one = api.get(f"/v1/jobs/{rec.id}")
    assert one.status_code == 200, one.text
    assert one.json()["status"] == "failed" and "damaged" in one.json()["error"]
    listing = api.get("/v1/jobs")
    assert listing.status_code == 200, listing.text
    assert rec.id in [j["id"] for j in listing.json()]
    assert api.get("/v1/jobs?status=queued").status_code == 200
    _assert_error(api.post(f"/v1/jobs/{rec.id}/cancel"), 409)


# ---- the queue or the disk away ----------------------------------------------------------------

def test_redis_unreachable_gives_503_saying_to_retry(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = _settings(f"redis://127.0.0.1:{port}/0", tmp_path)
    with TestClient(create_app(settings), base_url=BASE, raise_server_exceptions=False) as c:
        body = _assert_error(c.get("/v1/jobs"), 503, "unreachable", "retry")
        assert body["error"] == "queue_unavailable"
        resp = c.post("/v1/jobs", json={"avatar_id": "0123456789abcdef", "text": "Hello."})
        _assert_error(resp, 503, "nothing was accepted")
        assert resp.headers["retry-after"] == "2"


def test_wrong_redis_password_gives_503_naming_the_credentials(redis_server,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    url = str(redis_server.url).replace(redis_server.password, "wrong" * 6)
    with TestClient(create_app(_settings(url, tmp_path)), base_url=BASE,
                    raise_server_exceptions=False) as c:
        _assert_error(c.get("/v1/jobs"), 503, "credentials", "redis_url")


def test_a_full_disk_refuses_new_work_but_not_reads(redis_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    ) -> None:
    settings = _settings(_db_url(redis_server), tmp_path).model_copy(
        update={"min_free_mb": 10**9})
    with TestClient(create_app(settings), base_url=BASE, raise_server_exceptions=False) as c:
        body = _assert_error(c.post("/v1/jobs", json={"avatar_id": "0" * 16, "text": "Hi."}),
                             507, "free")
        assert body["error"] == "disk_low"
        _assert_error(c.post("/v1/avatars", files={"portrait": ("p.png", PORTRAIT)}), 507)
        assert c.get("/v1/jobs").status_code == 200


def test_unknown_paths_and_methods_say_what_exists(api: TestClient) -> None:
    body = _assert_error(api.get("/v1/nothing-here"), 404, "nothing at get /v1/nothing-here",
                         "/v1")
    assert body["error"] == "http_error"
    resp = api.put("/v1/jobs")
    _assert_error(resp, 405, "put /v1/jobs is not allowed", "readme")
    assert "POST" in resp.headers["allow"]


def test_a_damaged_avatar_record_breaks_nothing_else(api: TestClient, conn: redis.Redis,
                                                     avatar_id: str) -> None:
    """A record that no longer reads (an older version's, a hand edit): the listing still
    answers with the others, the avatar itself says what to do, and it can be deleted."""
    bad = uuid.uuid4().hex[:16]
    conn.set(keys.avatar(bad), json.dumps({"id": bad, "width": 512}))
    conn.zadd(keys.AVATARS, {bad: 1.0})
    listing = api.get("/v1/avatars")
    assert listing.status_code == 200, listing.text
    assert [a["id"] for a in listing.json()] == [avatar_id]
    body = _assert_error(api.get(f"/v1/avatars/{bad}"), 409, "damaged", "upload the portrait")
    assert body["error"] == "avatar_damaged"
    _assert_error(api.post("/v1/jobs", json={"avatar_id": bad, "text": "Hello."}), 409,
                  "damaged")
    assert api.delete(f"/v1/avatars/{bad}").status_code == 204
    assert conn.get(keys.avatar(bad)) is None and conn.zscore(keys.AVATARS, bad) is None
    _assert_error(api.get(f"/v1/avatars/{bad}"), 404, "no avatar")
