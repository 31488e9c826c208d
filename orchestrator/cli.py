"""`jayavatar`: submit a job from a photo and text, watch it, fetch the MP4.

    jayavatar submit --avatar me.jpg --text "Hello!" --wait -o hello.mp4
    jayavatar submit --avatar me.jpg --voice me.wav --text "Hi" -o hi.mp4   # piper-match
    jayavatar submit --avatar me.jpg --voice-engine piper-female --text "Hi" -o hi.mp4
    jayavatar submit --avatar me.jpg --text "Hi" --background beach.jpg --music song.mp3 \
        --captions burn -o hi.mp4
    jayavatar submit --avatar me.jpg --text "Hello!" --play -o hello.mp4  # watch it render
    jayavatar submit --avatar me.jpg --audio narration.mp3 [--text "its words"] -o me.mp4
    jayavatar status JOB | watch JOB | play JOB | result JOB -o out.mp4 | cancel JOB | avatars
    jayavatar live --avatar ID --audio reply.wav [--text "the transcript"] -o reply.mp4
    jayavatar media
    JAYAVATAR_TOKEN=... jayavatar --server http://box:8000 avatars   # a server with API_TOKEN
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from orchestrator.voices import VOICE_HINTS

console = Console(stderr=True)
TERMINAL = {"succeeded", "failed", "canceled"}


class CliError(Exception):
    pass


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message", resp.text)
        except ValueError:
            message = resp.text
        raise CliError(f"{resp.status_code}: {message}")
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") \
        else None


def create_avatar(client: httpx.Client, photo: Path, voice: Path | None) -> Any:
    files = {"portrait": (photo.name, photo.read_bytes())}
    if voice is not None:
        files["voice_sample"] = (voice.name, voice.read_bytes())
    return _check(client.post("/v1/avatars", files=files))


def media_ref(client: httpx.Client, value: str, kind: str) -> str:
    """`value` as a job option: a local file is uploaded (POST /v1/media) and named by its ref;
    anything else ('keep', '#rrggbb', 'media:<id>') is passed on for the API to check."""
    path = Path(value).expanduser()
    if not path.is_file():
        return value
    record = _check(client.post("/v1/media", data={"kind": kind},
                                files={"file": (path.name, path.read_bytes())}))
    console.print(f"uploaded {path.name} as {record['ref']}")
    return str(record["ref"])


def _sse(resp: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) for each server-sent event of a streaming response."""
    name, data = "message", list[str]()
    for line in resp.iter_lines():
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            name = line[6:].strip()


def _follow(client: httpx.Client, job_id: str,
            show: Callable[[str, str, float], None]) -> bool:
    """Show the job's events until a terminal one; False if the stream was refused or cut."""
    with client.stream("GET", f"/v1/jobs/{job_id}/events",
                       headers={"Accept": "text/event-stream"}) as resp:
        if resp.status_code != 200:
            return False
        status, stage = "queued", "audio"
        for _, event in _sse(resp):
            status, stage = event.get("status", status), event.get("stage", stage)
            show(status, stage, event.get("progress", 0.0))
            if event.get("type") != "progress" and status in TERMINAL:
                return True
    return False


def watch(client: httpx.Client, job_id: str, quiet: bool = False) -> Any:
    """Show the stage and a progress bar with ETA until the job ends; returns the final record.

    Follows the job's event stream; polls GET /v1/jobs/{id} instead if the stream breaks.
    """
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, disable=quiet) as bar:
        task = bar.add_task("queued", total=1.0)

        def show(status: str, stage: str, progress: float) -> None:
            label = status if status in TERMINAL else f"{stage} ({status})"
            bar.update(task, completed=progress, description=f"{label:<22}")

        try:
            if _follow(client, job_id, show):
                return _check(client.get(f"/v1/jobs/{job_id}"))
        except (httpx.TransportError, ValueError) as exc:
            if not quiet:
                bar.console.print(f"[yellow]event stream broke ({exc}); polling instead[/yellow]")
        while True:
            job = _check(client.get(f"/v1/jobs/{job_id}"))
            show(job["status"], job["stage"], job["progress"])
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.5)


def download(client: httpx.Client, job_id: str, out: Path, what: str = "result") -> None:
    """Save the job's `result` (MP4) or `captions` (SRT) to `out`, whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    with client.stream("GET", f"/v1/jobs/{job_id}/{what}") as resp:
        if resp.status_code >= 400:
            resp.read()
            _check(resp)
        with open(tmp, "wb") as fh:
            for block in resp.iter_bytes():
                fh.write(block)
    os.replace(tmp, out)


def player_command(url: str, token: str | None) -> list[str] | None:
    """ffplay (or else mpv) playing `url`, with the API token as an HTTP header; None if
    neither is on PATH. (The token is then in the player's command line, which other users of
    this machine can read in `ps`.)"""
    header = f"Authorization: Bearer {token.strip()}" if token else None
    if shutil.which("ffplay"):
        cmd = ["ffplay", "-autoexit", "-loglevel", "error", "-window_title", "JayAvatar"]
        return cmd + (["-headers", f"{header}\r\n"] if header else []) + [url]
    if shutil.which("mpv"):
        cmd = ["mpv", "--really-quiet", "--no-input-terminal", "--title=JayAvatar"]
        return cmd + ([f"--http-header-fields={header}"] if header else []) + [url]
    return None


@dataclass(frozen=True)
class Player:
    """A player started on a job's watch stream."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]


def play(client: httpx.Client, job_id: str, token: str | None) -> Player | None:
    """Start a player on the job's watch stream (GET /v1/jobs/{id}/stream: the video as it
    renders); without one, say where the stream is."""
    url = f"{str(client.base_url).rstrip('/')}/v1/jobs/{job_id}/stream"
    cmd = player_command(url, token)
    if cmd is None:
        console.print(f"neither ffplay nor mpv is on PATH; open the stream in a player: {url}",
                      soft_wrap=True)
        return None
    console.print(f"playing the job as it renders with {cmd[0]} ({url})", soft_wrap=True)
    return Player(cmd[0], url, subprocess.Popen(cmd, stdin=subprocess.DEVNULL))


def _played(client: httpx.Client, player: Player | None, job_id: str) -> int:
    """Wait for the viewer to close the player; fail, with the job's error, if it failed."""
    if player is not None:
        player.proc.wait()
    job = _check(client.get(f"/v1/jobs/{job_id}"))
    if job["status"] in ("failed", "canceled"):
        raise CliError(f"job {job['status']}: {job.get('error')}")
    if player is not None and player.proc.returncode != 0:
        raise CliError(f"{player.name} exited with code {player.proc.returncode}; the stream is "
                       f"at {player.url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jayavatar", description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="the API's URL (default: $JAYAVATAR_URL or "
                        "http://127.0.0.1:8000)",
                        default=os.environ.get("JAYAVATAR_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", help="the server's API token (default: $JAYAVATAR_TOKEN); "
                        "needed when it runs with API_TOKEN set",
                        default=os.environ.get("JAYAVATAR_TOKEN"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("submit", help="make a video of a photo saying a text")
    p.add_argument("--avatar", required=True, help="a portrait photo, or an existing avatar id")
    p.add_argument("--voice", type=Path,
                   help="a 3-30 s voice sample of the person (followed by piper-match or xtts)")
    p.add_argument("--voice-engine", default="auto", choices=list(VOICE_HINTS),
                   help="who speaks: " + "; ".join(f"{k}: {v}" for k, v in VOICE_HINTS.items())
                   .replace("%", "%%"))
    p.add_argument("--text", help="what to say; with --audio, the recording's transcript "
                   "(optional: it makes the mouth follow the words more closely)")
    p.add_argument("--audio", help="a recording of speech to animate instead of a voice "
                   "(WAV, MP3, FLAC, OGG/Opus, M4A), or media:<id> of one uploaded before")
    p.add_argument("--language", default="en",
                   help="the recording's language (default en); another code makes the mouth "
                   "follow the sound alone")
    p.add_argument("--normalize", action="store_true",
                   help="bring the recording to -16 LUFS (else it is kept as it is)")
    p.add_argument("--renderer", default="auto", help="portrait (default), wav2lip, sadtalker")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--aspect", choices=("1:1", "16:9", "9:16"), default="1:1")
    p.add_argument("--framing", choices=("face", "original"), default="face",
                   help="face: cropped around the face; original: the whole photo")
    p.add_argument("--speed", type=float, default=1.0, help="the voice's pace (0.5..2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", default="keep",
                   help="keep (default), a colour '#rrggbb', an image file, or media:<id>")
    p.add_argument("--music", help="a music file (looped under the voice, ducked) or media:<id>")
    p.add_argument("--music-volume", type=float, default=-10.0,
                   help="music level relative to the voice in dB (default -10; -40..0)")
    p.add_argument("--captions", choices=("off", "srt", "burn"), default="off",
                   help="srt: a captions file (saved beside -o) and a subtitle track; "
                   "burn: drawn on the picture")
    p.add_argument("--crf", type=int, default=18,
                   help="x264 quality when the picture is re-encoded (14..35, lower is better)")
    p.add_argument("--wait", action="store_true", help="wait, showing progress")
    p.add_argument("-o", "--output", type=Path, help="where to save the MP4 (implies --wait)")
    p.add_argument("--play", action="store_true",
                   help="play the video while it renders, in ffplay or mpv (else print its URL); "
                   "with --wait or -o, also waits and saves")
    for name in ("status", "watch", "cancel"):
        sub.add_parser(name).add_argument("job")
    sub.add_parser("play", help="play a job's video while it renders (ffplay or mpv)"
                   ).add_argument("job")
    p = sub.add_parser("result")
    p.add_argument("job")
    p.add_argument("-o", "--output", type=Path, required=True)
    sub.add_parser("avatars")
    sub.add_parser("media", help="list uploaded background images and music")
    p = sub.add_parser("live", help="a live session speaks a WAV file streamed at real time "
                       "(an audio line); saves what the session streamed")
    p.add_argument("--avatar", help="a portrait photo or an avatar id: a new session for it")
    p.add_argument("--session", help="speak in this running session instead (e.g. the web page's)")
    p.add_argument("--audio", type=Path, required=True, help="16-bit PCM WAV, 8-48 kHz")
    p.add_argument("--text", help="the audio's transcript, shown as captions")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--speed", type=float, default=1.0,
                   help="send the audio at this many times real time (0: all at once)")
    p.add_argument("-o", "--output", type=Path, help="where to save the session's stream (MP4)")
    p = sub.add_parser("recover", help="rebuild Redis from the job.json files in DATA_DIR")
    p.add_argument("--from-disk", action="store_true", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "recover":
        return _recover()

    try:
        headers = {"Authorization": f"Bearer {args.token.strip()}"} if args.token else {}
        with httpx.Client(base_url=args.server, timeout=120, headers=headers) as client:
            return _run(client, args)
    except CliError as exc:
        console.print(f"[red]error[/red] {exc}")
        return 1
    except httpx.TransportError as exc:
        console.print(f"[red]error[/red] cannot reach JayAvatar at {args.server} ({exc}); "
                      "is it running (make run)?")
        return 1


def _recover() -> int:
    import redis

    from orchestrator.recovery import recover_from_disk
    from orchestrator.settings import OrchestratorSettings
    from shared.jobs import JobStore

    settings = OrchestratorSettings.load()
    conn = redis.Redis.from_url(settings.redis_url)
    store = JobStore.from_settings(conn, settings)
    try:
        report = recover_from_disk(conn, store, settings.data_dir)
    except redis.RedisError as exc:
        console.print(f"[red]error[/red] Redis at {settings.redis_url_redacted} is unreachable: "
                      f"{exc}")
        return 1
    print(f"jobs restored {report.jobs_restored} (re-enqueued {report.jobs_requeued}), "
          f"already present {report.jobs_present}, avatars restored {report.avatars_restored}, "
          f"unreadable files {report.unreadable}, past retention {report.expired}")
    return 0


def _submit(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.text is None and args.audio is None:
        raise CliError("say what to speak: --text \"...\", or --audio with a recording")
    photo = Path(args.avatar)
    if photo.exists():
        avatar = create_avatar(client, photo, args.voice)
        avatar_id = avatar["id"]
        console.print(f"avatar {avatar_id}: face at {avatar['face_box']}")
    else:
        avatar_id = args.avatar
    body = {"avatar_id": avatar_id, "text": args.text or "", "voice": args.voice_engine,
            "renderer": args.renderer, "fps": args.fps, "size": args.size,
            "aspect": args.aspect, "framing": args.framing, "speed": args.speed,
            "seed": args.seed, "captions": args.captions, "crf": args.crf,
            "background": media_ref(client, args.background, "image"),
            "music_volume": args.music_volume}
    if args.audio:
        body.update(audio=media_ref(client, args.audio, "speech"), language=args.language,
                    normalize=args.normalize)
    if args.music:
        body["music"] = media_ref(client, args.music, "audio")
    job = _check(client.post("/v1/jobs", json=body))
    print(job["id"])
    player = play(client, job["id"], args.token) if args.play else None
    if not (args.wait or args.output):
        return _played(client, player, job["id"]) if args.play else 0
    final = watch(client, job["id"])
    if final["status"] != "succeeded":
        raise CliError(f"job {final['status']}: {final.get('error')}")
    if args.output:
        download(client, job["id"], args.output)
        console.print(f"saved {args.output}")
        if args.captions != "off":
            srt = args.output.with_suffix(".srt")
            download(client, job["id"], srt, "captions")
            console.print(f"saved {srt}")
    if player is not None:
        player.proc.wait()  # the viewer may still be watching
    return 0


def _status(client: httpx.Client, args: argparse.Namespace) -> int:
    job = _check(client.get(f"/v1/jobs/{args.job}"))
    print(f"{job['id']} {job['status']} stage={job['stage']} progress={job['progress']:.0%}"
          + (f" error={job['error']}" if job.get("error") else ""))
    return 0


def _cancel(client: httpx.Client, args: argparse.Namespace) -> int:
    job = _check(client.post(f"/v1/jobs/{args.job}/cancel"))
    print(f"{job['id']} {job['status']}")
    return 0


def _result(client: httpx.Client, args: argparse.Namespace) -> int:
    download(client, args.job, args.output)
    console.print(f"saved {args.output}")
    return 0


def _avatars(client: httpx.Client, args: argparse.Namespace) -> int:
    for a in _check(client.get("/v1/avatars")):
        print(f"{a['id']} {a.get('name') or '-'} {a['width']}x{a['height']} "
              f"face={a['face_box']} voice={'yes' if a['has_voice_sample'] else 'no'}")
    return 0


def _live(client: httpx.Client, args: argparse.Namespace) -> int:
    import asyncio

    from orchestrator import live_client

    if bool(args.avatar) == bool(args.session):
        raise CliError("give --avatar (a new session) or --session (a running one)")
    try:
        audio = live_client.read_wav(args.audio)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    session_id, made = args.session, False
    if args.avatar:
        photo = Path(args.avatar)
        avatar_id = create_avatar(client, photo, None)["id"] if photo.is_file() else args.avatar
        session_id = _check(client.post("/v1/sessions", json={"avatar_id": avatar_id,
                                                               "size": args.size}))["id"]
        made = True
    ws_url = (str(client.base_url).rstrip("/").replace("http", "ws", 1)
              + f"/v1/sessions/{session_id}/ws")

    def show(event: dict[str, Any]) -> None:
        if event["type"] in ("speech.start", "speech.end", "caption", "error", "restart"):
            console.print(" ".join(f"{k}={v}" for k, v in event.items()), soft_wrap=True)

    console.print(f"session {session_id}: speaking {args.audio} ({audio.duration:.1f} s, "
                  f"{audio.rate} Hz)")
    try:
        spoken = asyncio.run(live_client.speak(ws_url, audio, token=args.token, text=args.text,
                                               speed=args.speed, on_event=show))
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise CliError(f"live session {session_id}: {exc}") from exc
    finally:
        if made:
            client.delete(f"/v1/sessions/{session_id}")
    latency = spoken.latency_ms()
    if latency is not None:
        console.print(f"heard in the stream {latency:.0f} ms after the first audio byte was sent")
    if args.output:
        args.output.write_bytes(spoken.stream())
        console.print(f"saved {args.output}")
    return 0 if spoken.event("speech.end") else 1


def _media(client: httpx.Client, args: argparse.Namespace) -> int:
    for m in _check(client.get("/v1/media")):
        shape = (f"{m['width']}x{m['height']}" if m["kind"] == "image"
                 else f"{m['duration']:.1f} s")
        print(f"{m['ref']} {m['kind']} {shape} {m.get('name') or '-'}")
    return 0


COMMANDS: dict[str, Callable[[httpx.Client, argparse.Namespace], int]] = {
    "submit": _submit, "status": _status, "cancel": _cancel, "result": _result,
    "avatars": _avatars, "media": _media, "live": _live,
    "watch": lambda client, args: 0 if watch(client, args.job)["status"] == "succeeded" else 1,
    "play": lambda client, args: _played(client, play(client, args.job, args.token), args.job),
}


def _run(client: httpx.Client, args: argparse.Namespace) -> int:
    return COMMANDS[args.cmd](client, args)


if __name__ == "__main__":
    sys.exit(main())
