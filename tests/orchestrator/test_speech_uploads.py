"""POST /v1/media kind=speech (a recording a job animates), POST /v1/jobs with `audio`, and
uploads that are playlists or lists of other files: every kind refused at the door, nothing
outside the data dir read or served."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
SPEECH = DATA / "speech" / "LJ050-0131.wav"
SECONDS = 7.658  # LJ050-0131.wav
TRANSCRIPT = ("unless a system is established for the frequent formal review of activities "
              "thereunder. In this regard")


def _encode(tmp: Path, name: str, *args: str, source: Path = SPEECH) -> bytes:
    """The real recording re-encoded by ffmpeg (`args` before the output name)."""
    out = tmp / name
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *args,
                    str(out)], check=True)
    return out.read_bytes()


def _lavfi(tmp: Path, name: str, graph: str, *args: str) -> bytes:
    out = tmp / name
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", graph,
                    *args, str(out)], check=True)
    return out.read_bytes()


def _upload(client: httpx.Client, name: str, data: bytes, kind: str = "speech") -> httpx.Response:
    return client.post("/v1/media", data={"kind": kind}, files={"file": (name, data)})


def _assert_error(resp: httpx.Response, status: int, *words: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message"} and "Traceback" not in body["message"]
    for word in words:
        assert word in body["message"].lower(), body["message"]


FORMATS = [
    ("wav 8-bit", "a.wav", ("-c:a", "pcm_u8")),
    ("wav 16-bit 8 kHz", "a.wav", ("-ar", "8000", "-c:a", "pcm_s16le")),
    ("wav 24-bit 96 kHz", "a.wav", ("-ar", "96000", "-c:a", "pcm_s24le")),
    ("wav 32-bit int 192 kHz", "a.wav", ("-ar", "192000", "-c:a", "pcm_s32le")),
    ("wav float stereo 44.1 kHz", "a.wav", ("-ar", "44100", "-ac", "2", "-c:a", "pcm_f32le")),
    ("mp3", "a.mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
    ("flac", "a.flac", ("-c:a", "flac")),
    ("ogg opus", "a.ogg", ("-c:a", "libopus", "-b:a", "32k")),
    ("ogg vorbis", "a.ogg", ("-c:a", "libvorbis")),
    ("m4a aac stereo", "a.m4a", ("-ac", "2", "-c:a", "aac", "-b:a", "96k")),
]


@pytest.mark.parametrize("name,filename,args", FORMATS, ids=[f[0] for f in FORMATS])
def test_speech_formats_are_stored_as_48k_mono_flac(client: httpx.Client, cluster, tmp_path,  # type: ignore[no-untyped-def]
                                                    name, filename, args) -> None:
    resp = _upload(client, filename, _encode(tmp_path, filename, *args))
    assert resp.status_code == 201, resp.text
    media = resp.json()
    assert media["kind"] == "speech" and media["ref"] == f"media:{media['id']}"
    # the length comes from decoding: within a codec frame or two of the recording's
    assert media["duration"] == pytest.approx(SECONDS, abs=0.07)
    stored = cluster.data_dir / "media" / media["id"] / "speech.flac"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_name,sample_rate,channels", "-of", "csv=p=0",
                            str(stored)], capture_output=True, text=True, check=True).stdout
    assert probe.strip() == "flac,48000,1"
    got = client.get(media["file_url"])
    assert got.status_code == 200 and got.content == stored.read_bytes()


def _playlists(tmp: Path) -> list[tuple[str, str, bytes]]:
    secret = tmp / "secret.wav"
    secret.write_bytes(SPEECH.read_bytes())
    return [
        ("hls naming a local file", "a.m3u8",
         f"#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXTINF:60.0,\n{secret}\n#EXT-X-ENDLIST\n".encode()),
        ("hls disguised as wav", "a.wav",
         f"#EXTM3U\n#EXTINF:5,\nfile://{secret}\n#EXTINF:3600,\n../../../etc/passwd\n".encode()),
        ("concat list", "a.mp3", f"ffconcat version 1.0\nfile '{secret}'\n".encode()),
        ("sdp", "a.ogg", b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
                         b"m=audio 5004 RTP/AVP 0\n"),
        ("text", "a.flac", b"hello, I am text\n"),
    ]


@pytest.mark.parametrize("kind", ["speech", "audio"])
@pytest.mark.parametrize("index", range(5), ids=[c[0] for c in _playlists(Path("/tmp"))])
def test_playlists_and_lists_are_refused_and_read_nothing(client: httpx.Client, cluster,  # type: ignore[no-untyped-def]
                                                          tmp_path, kind, index) -> None:
    name, filename, data = _playlists(tmp_path)[index]
    before = {p.name for p in (cluster.data_dir / "media").iterdir()} \
        if (cluster.data_dir / "media").is_dir() else set()
    _assert_error(_upload(client, filename, data, kind), 415, "could not be read as audio")
    after = {p.name for p in (cluster.data_dir / "media").iterdir()}
    assert after == before  # nothing stored, no staging left


def test_voice_sample_playlist_is_refused(client: httpx.Client, tmp_path: Path) -> None:
    """A 363-byte playlist that "lasts 5 s" must not decode 300 s of another file."""
    long = tmp_path / "long.wav"
    long.write_bytes(_lavfi(tmp_path, "long.wav", "sine=f=200:d=300", "-ar", "8000"))
    playlist = f"#EXTM3U\n#EXTINF:5,\n{long}\n#EXT-X-ENDLIST\n".encode()
    resp = client.post("/v1/avatars", files={
        "portrait": ("p.png", (DATA / "portrait.png").read_bytes()),
        "voice_sample": ("v.wav", playlist)})
    _assert_error(resp, 415, "playlist")


def test_voice_sample_at_192k_is_checked_not_500(client: httpx.Client, tmp_path: Path) -> None:
    data = _encode(tmp_path, "v.wav", "-t", "4", "-ar", "192000", "-c:a", "pcm_s16le")
    resp = client.post("/v1/avatars", files={
        "portrait": ("p.png", (DATA / "portrait.png").read_bytes()),
        "voice_sample": ("v.wav", data)})
    assert resp.status_code == 201, resp.text
    assert resp.json()["has_voice_sample"]


def test_bad_speech_recordings(client: httpx.Client, cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (_lavfi(tmp_path, "s.wav", "anullsrc=r=16000:cl=mono:d=3"), 422, ("silent",)),
        # two steady tones, changing every 2 s: no pauses between syllables
        (_lavfi(tmp_path, "m.wav", "sine=f=440:d=8,volume=0.5[a];sine=f=660:d=8[b];"
                "[a][b]amix=inputs=2"), 422, ("music",)),
        (_encode(tmp_path, "c.wav", "-af", "volume=20dB", "-c:a", "pcm_s16le"), 422,
         ("clipped",)),
        (_lavfi(tmp_path, "l.mp3", "sine=f=300:d=65", "-ar", "8000", "-b:a", "8k"), 422,
         ("more than 60 s",)),
        (_encode(tmp_path, "x.wav", "-t", "0.1"), 422, ("0.10 s",)),
        ((DATA / "portrait.png").read_bytes(), 415, ("could not be read as audio",)),
        (_lavfi(tmp_path, "v.mp4", "testsrc=d=2:s=64x64"), 415, ("holds no audio",)),
    ]
    for data, status, words in cases:
        _assert_error(_upload(client, "r.wav", data), status, *words)
    leftovers = [p.name for p in (cluster.data_dir / "media").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.fixture(scope="module")
def recording(client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict:
    resp = _upload(client, "lj.wav", SPEECH.read_bytes())
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_bad_recording_job_options(client: httpx.Client, avatar_id: str, recording: dict,
                                   tmp_path: Path) -> None:
    music = client.post("/v1/media", data={"kind": "audio"},
                        files={"file": ("m.wav", _lavfi(tmp_path, "m.wav", "sine=d=2"))}).json()
    ref = recording["ref"]
    cases = [
        ({"audio": music["ref"]}, 422, ("audio upload", "kind=speech")),
        ({"audio": "narration.mp3"}, 422, ("media:<id>",)),
        ({"audio": "media:0123456789abcdef"}, 404, ("not an upload",)),
        ({"audio": ref, "voice": "piper"}, 422, ("recording's own voice",)),
        ({"audio": ref, "speed": 1.5}, 422, ("speed",)),
        ({"audio": ref, "language": "english please"}, 422, ("language code",)),
        ({"text": "hi", "language": "de"}, 422, ("language",)),
        ({"audio": ref, "language": "de", "captions": "srt"}, 422, ("need its transcript",)),
        ({"text": "hi", "voice": "recording"}, 422, ("kind=speech",)),
        ({"audio": ref, "text": "\u0000"}, 422, ("text",)),
        ({}, 422, ("text",)),
    ]
    for extra, status, words in cases:
        body = {"avatar_id": avatar_id, **extra}
        _assert_error(client.post("/v1/jobs", json=body), status, *words)


def test_recording_job_is_accepted_with_a_note(client: httpx.Client, avatar_id: str,
                                               recording: dict) -> None:
    for extra, note in [({"text": TRANSCRIPT}, "transcript, aligned"),
                        ({}, "phones recognised"),
                        ({"language": "pt_BR"}, "'pt-br'")]:
        resp = client.post("/v1/jobs", json={"avatar_id": avatar_id,
                                             "audio": recording["ref"].upper().replace(
                                                 "MEDIA:", "media:"), **extra})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        try:
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["options"]["audio"] == recording["ref"]
            assert job["engines"]["audio"] == "recording"
            assert any(note in n for n in job["notes"]), job["notes"]
        finally:
            client.post(f"/v1/jobs/{job_id}/cancel")
