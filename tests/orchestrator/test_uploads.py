"""Pictures that used to go wrong quietly: 16-bit grey, transparency, photos lying on their side,
large JPEGs, names with control characters, and staging folders left by a crash."""

from __future__ import annotations

import io
import signal
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Cluster, RedisServer
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "data"


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _avatar(client: httpx.Client, photo: bytes, **data: str) -> httpx.Response:
    return client.post("/v1/avatars", files={"portrait": ("me.png", photo)}, data=data)


def _stored(client: httpx.Client, avatar: dict) -> Image.Image:
    resp = client.get(f"/v1/avatars/{avatar['id']}/portrait")
    assert resp.status_code == 200
    return Image.open(io.BytesIO(resp.content))


def test_16_bit_grey_portrait_is_scaled_not_clipped(client: httpx.Client) -> None:
    grey = Image.open(DATA / "portrait.png").convert("L")
    wide = Image.frombytes("I;16", grey.size, b"".join(
        struct.pack("<H", v * 257) for v in grey.tobytes()))
    photo = _png(wide)
    assert Image.open(io.BytesIO(photo)).mode == "I;16"
    resp = _avatar(client, photo)
    assert resp.status_code == 201, resp.text  # not clipped to white (which finds no face)
    avatar = resp.json()
    stored = _stored(client, avatar).convert("L")
    assert stored.getextrema()[0] < 40 and 60 < sum(stored.getdata()) / (512 * 512) < 200
    client.delete(f"/v1/avatars/{avatar['id']}")


def test_transparent_background_is_filled_grey_and_said(client: httpx.Client) -> None:
    rgba = Image.open(DATA / "portrait.png").convert("RGBA")
    w, h = rgba.size
    for x in range(w):  # a cut-out: black, fully transparent corners
        for y in list(range(40)) + list(range(h - 40, h)):
            rgba.putpixel((x, y), (0, 0, 0, 0))
    resp = _avatar(client, _png(rgba))
    assert resp.status_code == 201, resp.text
    avatar = resp.json()
    assert any("transparent" in n and "light grey" in n for n in avatar["notes"]), avatar
    assert _stored(client, avatar).convert("RGB").getpixel((5, 5)) == (200, 200, 200)
    client.delete(f"/v1/avatars/{avatar['id']}")


@pytest.mark.parametrize("turn,degrees", [(Image.Transpose.ROTATE_90, 90),
                                          (Image.Transpose.ROTATE_180, 180)])
def test_photo_lying_on_its_side_is_turned_upright_and_said(
        client: httpx.Client, turn: Image.Transpose, degrees: int) -> None:
    upright = Image.open(DATA / "portrait.png").convert("RGB")
    side = upright.crop((0, 0, 512, 400)).transpose(turn)  # not square: the turn shows
    resp = _avatar(client, _png(side))
    assert resp.status_code == 201, resp.text  # upright, so a face is found
    avatar = resp.json()
    assert any(f"turned {degrees} degrees" in n for n in avatar["notes"]), avatar["notes"]
    assert (avatar["width"], avatar["height"]) == (512, 400)
    assert _stored(client, avatar).size == (512, 400)
    client.delete(f"/v1/avatars/{avatar['id']}")


def test_objects_lying_sideways_are_not_taken_for_a_face(client: httpx.Client) -> None:
    """cups.png (mugs and a spoon, no face): the face mesh alone sees a face in it turned
    270 degrees, which the search for a photo lying on its side used to accept."""
    resp = _avatar(client, (DATA / "cups.png").read_bytes())
    assert resp.status_code == 422, resp.text
    error = resp.json()
    assert error["error"] == "no_face", error
    assert "no face was found in the portrait" in error["message"], error


def test_large_jpeg_is_decoded_reduced(client: httpx.Client) -> None:
    jpeg = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=6000x4000",
         "-frames:v", "1", "-q:v", "20", "-f", "image2", "-c:v", "mjpeg", "-"],
        capture_output=True, check=True).stdout
    assert len(jpeg) < 2 * 1024 * 1024
    resp = client.post("/v1/media", data={"kind": "image"}, files={"file": ("big.jpg", jpeg)})
    assert resp.status_code == 201, resp.text
    media = resp.json()
    # decoded at half scale by the JPEG codec (draft), 6 MP: never 24 MP in memory
    assert (media["width"], media["height"]) == (3000, 2000)
    client.delete(f"/v1/media/{media['id']}")


@pytest.mark.parametrize("name,where", [
    ("Jay\x07", "U+0007"),
    ("\u202eyaJ", "U+202E"),  # right-to-left override: a spoofed name
    (b"Ja\x85y", "U+0085"),  # invalid UTF-8: the byte arrives as a C1 control
    ("Jay\ufffd", "U+FFFD"),  # what a lossy client made of invalid UTF-8
])
def test_names_with_control_characters_are_refused(client: httpx.Client, name: str | bytes,
                                                   where: str) -> None:
    photo = (DATA / "portrait.png").read_bytes()
    for path, files in (("/v1/avatars", {"portrait": ("me.png", photo)}),
                        ("/v1/media", {"file": ("bg.png", photo)})):
        resp = client.post(path, data={"kind": "image"},
                           files={**files, "name": (None, name)})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["error"] == "bad_name" and where in body["message"], body


def test_emoji_name_with_joiner_is_kept(client: httpx.Client) -> None:
    resp = _avatar(client, (DATA / "portrait.png").read_bytes(),
                   name="  \U0001F469\u200d\U0001F4BB Jay ")
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "\U0001F469\u200d\U0001F4BB Jay"
    client.delete(f"/v1/avatars/{resp.json()['id']}")


@pytest.fixture()
def lone(tmp_path: Path) -> Iterator[Cluster]:
    """An orchestrator alone (its own Redis, no workers), pixels capped at 1 MP."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    cluster = Cluster(server, tmp_path / "data", {"LOG_LEVEL": "WARNING",
                                                  "ANALYZE_TIMEOUT_S": "60",
                                                  "MAX_IMAGE_PIXELS": "1000000"})
    try:
        cluster.start_orchestrator()
        yield cluster
    finally:
        cluster.stop()
        server.kill()


def _header_only_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


def test_pixel_count_is_refused_from_the_header(lone: Cluster) -> None:
    with httpx.Client(base_url=lone.url, timeout=30) as c:
        resp = c.post("/v1/media", data={"kind": "image"},
                      files={"file": ("b.png", _header_only_png(1200, 1000))})
    assert resp.status_code == 413, resp.text
    message = resp.json()["message"]
    assert "1200x1000" in message and "1.2 megapixels" in message
    assert "at most 1.0 megapixels" in message


def test_staging_left_by_a_crash_is_swept_at_start(lone: Cluster) -> None:
    avatars = lone.data_dir / "avatars"
    (avatars / ".deleted-0123456789abcdef-1").mkdir()  # a delete cut short
    sent = threading.Thread(target=lambda: _post_quietly(lone))
    sent.start()
    deadline = time.monotonic() + 20
    while not [p for p in avatars.iterdir() if p.name.startswith(".staging-")]:
        assert time.monotonic() < deadline, "the upload was never staged"
        time.sleep(0.05)
    time.sleep(0.3)  # portrait.png written, waiting for a visual worker there is none of
    lone.procs["orchestrator"][-1].send_signal(signal.SIGKILL)
    lone.procs["orchestrator"][-1].wait()
    sent.join()
    left = sorted(p.name for p in avatars.iterdir())
    assert len(left) == 2 and any(n.startswith(".staging-") for n in left), left
    lone.start_orchestrator()
    assert list(avatars.iterdir()) == []


def _post_quietly(cluster: Cluster) -> None:
    try:
        with httpx.Client(base_url=cluster.url, timeout=60) as c:
            c.post("/v1/avatars", files={"portrait": ("me.png",
                                                      (DATA / "portrait.png").read_bytes())})
    except httpx.TransportError:
        pass  # the orchestrator was killed under it


def test_recovery_skips_staging_folders(redis_server: RedisServer, tmp_path: Path) -> None:
    """A crash after avatar.json was written in staging, before the rename, leaves no avatar
    for `jayavatar recover --from-disk` to bring back under a folder that is not its own."""
    import redis

    from orchestrator.recovery import recover_from_disk
    from shared.jobs import JobStore
    from shared.models import AvatarRecord
    from shared.storage import atomic_write_json

    conn = redis.Redis.from_url(redis_server.url)
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    staged = AvatarRecord(id="5a5a5a5a5a5a5a5a", width=512, height=512,
                          face_box=(1, 2, 3, 4), faces_found=1, portrait_sha256="0")
    kept = staged.model_copy(update={"id": "6b6b6b6b6b6b6b6b"})
    for folder, record in ((f".staging-0123456789ab-{staged.id}", staged), (kept.id, kept)):
        atomic_write_json(data / "avatars" / folder / "avatar.json",
                          record.model_dump(mode="json"))
    report = recover_from_disk(conn, JobStore(conn, data), data)
    assert report.avatars_restored == 1
    assert conn.exists(f"ja:avatar:{kept.id}") and not conn.exists(f"ja:avatar:{staged.id}")
    conn.delete(f"ja:avatar:{kept.id}")
    conn.zrem("ja:avatars", kept.id)
