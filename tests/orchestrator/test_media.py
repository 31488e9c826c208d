"""POST /v1/media and the compose options of POST /v1/jobs: checked at the door, clear 4xx."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import wave
from pathlib import Path

import httpx
import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
MEDIA_ID = "0123456789abcdef"


def _wav(seconds: float, amplitude: int = 8000, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(amplitude * math.sin(i / 5)))
                               for i in range(int(rate * seconds))))
    return buf.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         f"testsrc=s={width}x{height}", "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg", "-"],
        capture_output=True, check=True).stdout


def _upload(client: httpx.Client, kind: str, name: str, data: bytes) -> httpx.Response:
    return client.post("/v1/media", data={"kind": kind}, files={"file": (name, data)})


def _assert_error(resp: httpx.Response, status: int, *words: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message"} and "Traceback" not in body["message"]
    for word in words:
        assert word in body["message"].lower(), body["message"]


@pytest.fixture(scope="module")
def image(client: httpx.Client) -> dict:
    resp = _upload(client, "image", "beach.jpg", _jpeg(320, 180))
    assert resp.status_code == 201, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def track(client: httpx.Client) -> dict:
    resp = _upload(client, "audio", "song.wav", _wav(2.0))
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_image_upload_is_stored_as_png(client: httpx.Client, image: dict, cluster) -> None:  # type: ignore[no-untyped-def]
    assert image["kind"] == "image" and image["name"] == "beach.jpg"
    assert (image["width"], image["height"]) == (320, 180)
    assert image["ref"] == f"media:{image['id']}" and len(image["id"]) == 16
    stored = cluster.data_dir / "media" / image["id"]
    assert sorted(p.name for p in stored.iterdir()) == ["image.png", "media.json"]
    resp = client.get(image["file_url"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.content.startswith(b"\x89PNG") and len(resp.content) == image["size"]


def test_audio_upload_is_stored_as_flac(client: httpx.Client, track: dict, cluster) -> None:  # type: ignore[no-untyped-def]
    assert track["kind"] == "audio" and track["duration"] == pytest.approx(2.0, abs=0.01)
    flac = cluster.data_dir / "media" / track["id"] / "audio.flac"
    info = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                           "stream=codec_name,sample_rate,channels", "-of", "csv=p=0",
                           str(flac)], capture_output=True, text=True, check=True).stdout
    assert info.strip() == "flac,48000,2"


def test_list_get_and_delete(client: httpx.Client) -> None:
    made = _upload(client, "audio", "jingle.wav", _wav(1.5)).json()
    assert made["id"] in [m["id"] for m in client.get("/v1/media").json()]
    assert client.get(f"/v1/media/{made['id']}").json() == made
    assert client.delete(f"/v1/media/{made['id']}").status_code == 204
    _assert_error(client.get(f"/v1/media/{made['id']}"), 404, "no uploaded media")
    _assert_error(client.delete(f"/v1/media/{made['id']}"), 404)
    _assert_error(client.get("/v1/media/../../etc"), 404)


MEDIA_CASES = [
    ("unknown kind", "video", "a.mp4", b"x" * 100, 422, ("'image'", "'audio'")),
    ("text as image", "image", "a.png", b"hello, I am text", 415, ("background image", "png")),
    ("tiny image", "image", "a.jpg", _jpeg(32, 32), 422, ("32x32", "at least")),
    ("png as audio", "audio", "a.wav", (DATA / "portrait.png").read_bytes(), 415,
     ("could not be read as audio",)),
    ("half a second", "audio", "a.wav", _wav(0.5), 422, ("0.5 s", "1-600")),
    ("silent track", "audio", "a.wav", _wav(3.0, amplitude=0), 422, ("silent",)),
    ("path-like name", "audio", "../x.wav", _wav(2.0), 400, ("plain file",)),
    ("empty file", "image", "a.png", b"", 422, ("empty",)),
    ("too large", "audio", "big.wav", b"RIFF" + b"\x00" * (3 * 1024 * 1024), 413,
     ("larger than",)),
]


@pytest.mark.parametrize("name,kind,filename,data,status,words", MEDIA_CASES,
                         ids=[c[0] for c in MEDIA_CASES])
def test_bad_media_uploads(client: httpx.Client, cluster, name, kind, filename, data, status,  # type: ignore[no-untyped-def]
                           words) -> None:
    _assert_error(_upload(client, kind, filename, data), status, *words)
    leftovers = [p.name for p in (cluster.data_dir / "media").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_upload_without_kind_or_file(client: httpx.Client) -> None:
    _assert_error(client.post("/v1/media", files={"file": ("a.wav", _wav(2.0))}), 422, "kind")
    _assert_error(client.post("/v1/media", data={"kind": "audio"}), 422, "file")


def job_cases() -> list[tuple[str, dict, int, tuple[str, ...]]]:
    return [
        ("colour name", {"background": "red"}, 422, ("#rrggbb", "keep")),
        ("short colour", {"background": "#12345"}, 422, ("#rrggbb",)),
        ("unknown media", {"background": f"media:{MEDIA_ID}"}, 404, ("post /v1/media",)),
        ("audio as background", {"background": "TRACK"}, 422, ("audio upload", "kind=image")),
        ("image as music", {"music": "IMAGE"}, 422, ("image upload", "kind=audio")),
        ("music file name", {"music": "song.mp3"}, 422, ("media:<id>",)),
        ("unknown music", {"music": f"media:{MEDIA_ID}"}, 404, ("not an upload",)),
        ("loud music", {"music": "TRACK", "music_volume": 6}, 422, ("music_volume",)),
        ("captions yes", {"captions": "yes"}, 422, ("captions", "'srt'")),
        ("crf 50", {"crf": 50}, 422, ("crf", "35")),
        ("crf 5", {"crf": 5}, 422, ("crf", "14")),
    ]


@pytest.mark.parametrize("name,extra,status,words", job_cases(), ids=[c[0] for c in job_cases()])
def test_bad_compose_options(client: httpx.Client, avatar_id: str, image: dict, track: dict,
                             name: str, extra: dict, status: int, words: tuple[str, ...]) -> None:
    refs = {"IMAGE": image["ref"], "TRACK": track["ref"]}
    body = {"avatar_id": avatar_id, "text": "hi",
            **{k: refs.get(v, v) if isinstance(v, str) else v for k, v in extra.items()}}
    _assert_error(client.post("/v1/jobs", json=body), status, *words)


def test_good_options_are_stored_normalised_and_captions_wait(
        client: httpx.Client, avatar_id: str, image: dict, track: dict) -> None:
    body = {"avatar_id": avatar_id, "text": "Hello there.", "background": image["ref"],
            "music": track["ref"].upper().replace("MEDIA:", "media:"), "music_volume": -20,
            "captions": "srt", "crf": 23}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    try:
        options = client.get(f"/v1/jobs/{job_id}").json()["options"]
        assert (options["background"], options["music"]) == (image["ref"], track["ref"])
        assert (options["music_volume"], options["captions"], options["crf"]) == (-20, "srt", 23)
        _assert_error(client.get(f"/v1/jobs/{job_id}/captions"), 409, "succeeded")
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
    colour = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Hi.",
                                           "background": " #A0B1C2 "})
    assert colour.status_code == 202, colour.text
    try:
        job = client.get(f"/v1/jobs/{colour.json()['id']}").json()
        assert job["options"]["background"] == "#a0b1c2" and job["options"]["captions"] == "off"
        _assert_error(client.get(f"/v1/jobs/{job['id']}/captions"), 404, "without captions")
    finally:
        client.post(f"/v1/jobs/{colour.json()['id']}/cancel")
    _assert_error(client.get("/v1/jobs/ffff/captions"), 404, "no job")
