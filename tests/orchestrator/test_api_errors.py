"""Bad input gets a 4xx with a sentence a person can act on, and leaves nothing on disk."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"


def _png(width: int, height: int, rgb: tuple[int, int, int] = (128, 128, 128)) -> bytes:
    """A plain PNG made with the stdlib, no imaging library needed."""
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                  0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size; the pixels are never sent (a decompression bomb)."""
    full = _png(8, 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(
        ">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return full[:8] + chunk + full[8 + 25:]


def _wav(seconds: float, amplitude: int, rate: int = 8000) -> bytes:
    import math
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(amplitude * math.sin(i / 5)))
                               for i in range(int(rate * seconds))))
    return buf.getvalue()


def _long_ogg(seconds: int) -> bytes:
    """Minutes of speech-like tone, small on the wire (Opus at 6 kb/s)."""
    import subprocess

    return subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"sine=frequency=220:duration={seconds}",
         "-c:a", "libopus", "-b:a", "6k", "-f", "ogg", "-"],
        capture_output=True, check=True).stdout


def _animated_png() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (128, 128), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _assert_error(resp, status: int, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message"}
    assert "Traceback" not in body["message"]
    for word in words:
        assert word in body["message"].lower(), body["message"]


AVATAR_CASES = [
    ("not an image", {"portrait": ("me.png", b"hello, I am text")}, 415, ("png", "jpeg")),
    ("no face", {"portrait": ("grey.png", _png(256, 256))}, 422, ("no face",)),
    ("1x1 image", {"portrait": ("dot.png", _png(1, 1))}, 422, ("at least",)),
    ("truncated image", {"portrait": ("cut.png", (DATA / "portrait.png").read_bytes()[:5000])},
     422, ("damaged",)),
    ("path-like name", {"portrait": ("../../etc/passwd.png", _png(64, 64))}, 400, ("plain file",)),
    ("oversized", {"portrait": ("big.png", b"\x89PNG" + b"\x00" * (3 * 1024 * 1024))}, 413,
     ("larger than",)),
    ("empty file", {"portrait": ("empty.png", b"")}, 422, ("empty",)),
    ("voice not audio", {"portrait": ("p.png", (DATA / "portrait.png").read_bytes()),
                         "voice_sample": ("v.wav", b"RIFF....not really")}, 415, ("audio",)),
    ("20000x20000 image", {"portrait": ("huge.png", _png_header_only(20000, 20000))}, 413,
     ("too many pixels", "8192")),
    ("gif", {"portrait": ("a.gif", b"GIF89a" + b"\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 40)},
     415, ("png", "jpeg")),
    ("silent voice", {"portrait": ("p.png", (DATA / "portrait.png").read_bytes()),
                      "voice_sample": ("v.wav", _wav(5.0, 0))}, 422, ("silent",)),
    ("0.5 s voice", {"portrait": ("p.png", (DATA / "portrait.png").read_bytes()),
                     "voice_sample": ("v.wav", _wav(0.5, 8000))}, 422, ("0.5 s", "3-30")),
    ("10 minute voice", {"portrait": ("p.png", (DATA / "portrait.png").read_bytes()),
                         "voice_sample": ("v.ogg", _long_ogg(600))}, 422,
     ("more than 30 s", "3-30")),
    ("voice path name", {"portrait": ("p.png", (DATA / "portrait.png").read_bytes()),
                         "voice_sample": ("..\\me.wav", _wav(5.0, 8000))}, 400, ("plain file",)),
]


@pytest.mark.parametrize("name,files,status,words", AVATAR_CASES, ids=[c[0] for c in AVATAR_CASES])
def test_bad_avatar_uploads(client, cluster, name, files, status, words) -> None:  # type: ignore[no-untyped-def]
    _assert_error(client.post("/v1/avatars", files=files), status, *words)
    leftovers = [p.name for p in (cluster.data_dir / "avatars").iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []


def test_animated_portrait_is_rejected(client) -> None:  # type: ignore[no-untyped-def]
    _assert_error(client.post("/v1/avatars", files={"portrait": ("a.png", _animated_png())}),
                  422, "animated")


def test_missing_portrait_field(client) -> None:  # type: ignore[no-untyped-def]
    _assert_error(client.post("/v1/avatars", files={"photo": ("p.png", _png(64, 64))}), 422,
                  "portrait")


@pytest.mark.parametrize("body,status,words", [
    ({"text": "hi"}, 422, ("avatar_id", "required")),
    ({"avatar_id": "AVATAR", "text": ""}, 422, ("empty",)),
    ({"avatar_id": "AVATAR", "text": "   \n "}, 422, ("empty",)),
    ({"avatar_id": "AVATAR", "text": "x" * 5001}, 422, ("5001", "5000")),
    ({"avatar_id": "AVATAR", "text": "?!..."}, 422, ("letters",)),
    ({"avatar_id": "0123456789abcdef", "text": "hi"}, 404, ("no avatar",)),
    ({"avatar_id": "AVATAR", "text": "hi", "voice": "sam"}, 422, ("piper", "expected one of")),
    ({"avatar_id": "AVATAR", "text": "hi", "renderer": "deepfake"}, 422, ("portrait",)),
    ({"avatar_id": "AVATAR", "text": "hi", "fps": 1000}, 422, ("fps",)),
    ({"avatar_id": "AVATAR", "text": "hi", "size": 99999}, 422, ("size",)),
    ({"avatar_id": "AVATAR", "text": 42}, 422, ("text",)),
    ({"avatar_id": "AVATAR", "text": "hi", "colour": "red"}, 422, ("colour", "not a known")),
    ({"avatar_id": "AVATAR", "text": "hi", "voice": "xtts"}, 422,
     ("xtts_v2/model.pth", "download_models.sh")),
    ({"avatar_id": "AVATAR", "text": "hi", "renderer": "wav2lip"}, 422,
     ("wav2lip/wav2lip_gan.pth", "download_models.sh")),
    ({"avatar_id": "AVATAR", "text": "hi", "speed": "fast"}, 422, ("speed",)),
    ({"avatar_id": "A" * 500, "text": "hi"}, 422, ("avatar_id",)),
    ([1, 2, 3], 422, ("body",)),
])
def test_bad_job_requests(client, avatar_id, body, status, words) -> None:  # type: ignore[no-untyped-def]
    if isinstance(body, dict) and body.get("avatar_id") == "AVATAR":
        body = {**body, "avatar_id": avatar_id}
    _assert_error(client.post("/v1/jobs", json=body), status, *words)


def test_broken_json_and_non_utf8(client) -> None:  # type: ignore[no-untyped-def]
    headers = {"content-type": "application/json"}
    _assert_error(client.post("/v1/jobs", content=b'{"text": ', headers=headers), 422, "json")
    _assert_error(client.post("/v1/jobs", content=b'{"text": "\xff\xfe"}', headers=headers),
                  400, "utf-8")
    _assert_error(client.post("/v1/avatars", content=b"--x\r\nbroken",
                              headers={"content-type": "multipart/form-data; boundary=x"}), 422,
                  "portrait")


def test_bad_idempotency_key(client, avatar_id) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "hi"},
                       headers={"Idempotency-Key": "x" * 300})
    _assert_error(resp, 400, "idempotency-key")


def test_unknown_ids(client) -> None:  # type: ignore[no-untyped-def]
    _assert_error(client.get("/v1/jobs/ffff"), 404, "no job")
    _assert_error(client.get("/v1/jobs/../../etc"), 404)
    _assert_error(client.get("/v1/avatars/nothere"), 404, "no avatar")
    _assert_error(client.get("/v1/jobs?status=bogus"), 422, "expected one of")


def test_avatar_lifecycle(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/avatars", files={"portrait": ("me.png",
                                                          (DATA / "portrait.png").read_bytes())},
                       data={"name": "Jay"})
    assert resp.status_code == 201, resp.text
    avatar = resp.json()
    assert avatar["name"] == "Jay"
    assert avatar["id"] in [a["id"] for a in client.get("/v1/avatars").json()]
    assert client.get(f"/v1/avatars/{avatar['id']}/portrait").headers["content-type"] == "image/png"
    assert client.delete(f"/v1/avatars/{avatar['id']}").status_code == 204
    _assert_error(client.get(f"/v1/avatars/{avatar['id']}"), 404)


def _two_faces() -> bytes:
    """The test portrait and, beside it, the same face at 60% size, as one PNG."""
    from PIL import Image

    big = Image.open(DATA / "portrait.png").convert("RGB")
    small = big.resize((int(big.width * 0.6), int(big.height * 0.6)), Image.LANCZOS)
    canvas = Image.new("RGB", (big.width + small.width, big.height), (128, 128, 128))
    canvas.paste(big, (0, 0))
    canvas.paste(small, (big.width, 0))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def test_avatar_with_several_faces_chooses_one_and_shows_them(client, cluster) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    photo = _two_faces()
    largest = client.post("/v1/avatars", files={"portrait": ("two.png", photo)}).json()
    assert largest["faces_found"] == 2 and largest["face_index"] == 0
    assert "face=<number>" in " ".join(largest["notes"])
    second = client.post("/v1/avatars", files={"portrait": ("two.png", photo)},
                         data={"face": "1"}).json()
    assert second["face_index"] == 1 and second["notes"] == []
    assert second["face_box"][0] > largest["face_box"][0]  # the smaller face on the right
    assert second["face_box"][2] < largest["face_box"][2]
    resp = client.get(f"/v1/avatars/{second['id']}/thumbnail")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(resp.content)).size) == 320
    before = sorted(p.name for p in (cluster.data_dir / "avatars").iterdir())
    _assert_error(client.post("/v1/avatars", files={"portrait": ("two.png", photo)},
                              data={"face": "2"}), 422, "2 face(s)", "numbered 0 to 1")
    assert sorted(p.name for p in (cluster.data_dir / "avatars").iterdir()) == before
    for avatar in (largest, second):
        assert client.delete(f"/v1/avatars/{avatar['id']}").status_code == 204


def test_original_framing_refuses_a_face_too_small_to_animate(client) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    face = Image.open(DATA / "portrait.png").convert("RGB")
    canvas = Image.new("RGB", (face.width * 4, face.height * 4), (120, 130, 140))
    canvas.paste(face, (0, 0))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    resp = client.post("/v1/avatars", files={"portrait": ("far.png", out.getvalue())})
    assert resp.status_code == 201, resp.text
    avatar = resp.json()
    try:
        body = {"avatar_id": avatar["id"], "text": "Hello.", "size": 256, "framing": "original"}
        _assert_error(client.post("/v1/jobs", json=body), 422, "framing 'face'", "px wide")
        resp = client.post("/v1/jobs", json={**body, "framing": "face"})  # the crop is fine
        assert resp.status_code == 202, resp.text
        assert client.post(f"/v1/jobs/{resp.json()['id']}/cancel").status_code == 200
    finally:
        client.delete(f"/v1/avatars/{avatar['id']}")
