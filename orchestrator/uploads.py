"""Checking uploads (file names, display names, voice samples, music) before anything is stored;
pictures are decoded in images.py.

Every rejection raises an `InvalidInput` (or one of its kinds) with a sentence a person can act on.
"""

from __future__ import annotations

import json
import re
import subprocess
import unicodedata
from pathlib import Path
from typing import BinaryIO, Protocol

from orchestrator import voice_sample
from shared.errors import InvalidInput, Malformed, TooLarge, Unsupported

MIN_VOICE_S, MAX_VOICE_S = 3.0, 30.0
MIN_MUSIC_S, MAX_MUSIC_S = 1.0, 600.0
_JOINERS = {"\u200c", "\u200d"}  # zero-width (non-)joiners
_SAFE_NAME = re.compile(r"^[\w\-. ()]{1,200}$")


class Upload(Protocol):
    """An uploaded file as the API hands it over (FastAPI's UploadFile is one)."""

    @property
    def filename(self) -> str | None: ...

    @property
    def file(self) -> BinaryIO: ...


def check_file_name(upload: Upload, field: str) -> None:
    name = upload.filename or ""
    if not name:
        return
    if "/" in name or "\\" in name or ".." in name or "\x00" in name or not _SAFE_NAME.match(name):
        raise Malformed(f"the {field} file name {name[:80]!r} looks like a path; send a plain file "
                        "name such as 'me.jpg' (letters, digits, spaces, '-', '_', '.')",
                        code="bad_file_name")


def check_name(name: str | None, what: str) -> str | None:
    """A display name, trimmed (None when blank): at most 200 characters, none of them a
    control or invisible formatting character (zero-width joiners, as in emoji, are fine)."""
    if name is None or not name.strip():
        return None
    name = name.strip()
    if len(name) > 200:
        raise InvalidInput(f"the {what} name may be at most 200 characters", code="bad_name")
    for i, ch in enumerate(name):
        kind = unicodedata.category(ch)
        if kind in ("Cc", "Cs") or (kind == "Cf" and ch not in _JOINERS) or ch == "\ufffd":
            raise InvalidInput(f"the {what} name has a control or invisible character "
                               f"(U+{ord(ch):04X} at position {i + 1}); send plain text in UTF-8: "
                               "letters, digits, spaces and punctuation", code="bad_name")
    return name


def read_limited(upload: Upload, field: str, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the {field} upload is larger than {limit // (1024 * 1024)} MB; "
                       "send a smaller file", code="too_large")
    if not data:
        raise InvalidInput(f"the {field} upload is empty", code="empty_file")
    return data


def check_voice_sample(original: Path, out_wav: Path) -> float:
    """Validate a voice sample with ffprobe and convert it to mono 22.05 kHz WAV; its seconds."""
    accepted = f"a WAV, MP3, FLAC or OGG recording of {MIN_VOICE_S:.0f}-{MAX_VOICE_S:.0f} seconds"
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_type:format=duration", "-of", "json", str(original)],
        capture_output=True, text=True, timeout=30)
    try:
        info = json.loads(proc.stdout or "{}")
        has_audio = bool(info.get("streams"))
        duration = float(info.get("format", {}).get("duration", "nan"))
    except (ValueError, TypeError):
        has_audio, duration = False, float("nan")
    if proc.returncode != 0 or not has_audio or duration != duration:
        raise Unsupported(f"the voice sample could not be read as audio; send {accepted}",
                          code="not_audio")
    if not MIN_VOICE_S <= duration <= MAX_VOICE_S:
        raise InvalidInput(f"the voice sample lasts {duration:.1f} s; send {accepted}",
                           code="voice_duration")
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(original), "-map", "0:a:0",
         "-ac", "1", "-ar", "22050", "-c:a", "pcm_s16le",
         str(out_wav)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise InvalidInput(f"the voice sample could not be decoded; send {accepted}",
                           code="bad_audio")
    if _peak_db(out_wav, timeout=60) < -45.0:
        raise InvalidInput("the voice sample is silent; record yourself speaking for "
                           f"{MIN_VOICE_S:.0f}-{MAX_VOICE_S:.0f} seconds", code="silent_audio")
    voice_sample.check(out_wav, original)  # one person speaking: no music, clipping, 2nd voice
    return duration


def _peak_db(path: Path, timeout: float) -> float:
    """The loudest sample of a decodable audio file in dBFS (ffmpeg volumedetect); -inf when
    it is silent or the level cannot be read."""
    level = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(path), "-af", "volumedetect",
         "-f", "null", "-"], capture_output=True, text=True, timeout=timeout).stderr
    match = re.search(r"max_volume: (-?[\d.]+|-inf) dB", level)
    return float(match.group(1)) if match is not None else float("-inf")


def _audio_seconds(path: Path) -> float | None:
    """The duration ffprobe finds for the first audio stream of `path`; None if it finds none."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_type:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30)
    try:
        info = json.loads(proc.stdout or "{}")
        duration = float(info.get("format", {}).get("duration", "nan"))
    except (ValueError, TypeError, AttributeError):
        return None
    if proc.returncode != 0 or not info.get("streams") or duration != duration:
        return None
    return duration


def check_music(original: Path, out_flac: Path) -> float:
    """Validate a music track with ffprobe and store it as 48 kHz stereo FLAC; its seconds.

    Decoding it whole here means a job never meets an undecodable or silent track later.
    """
    accepted = (f"a WAV, MP3, FLAC, OGG or M4A track of {MIN_MUSIC_S:.0f}-{MAX_MUSIC_S:.0f} "
                "seconds (it is looped or cut to the speech)")
    duration = _audio_seconds(original)
    if duration is None:
        raise Unsupported(f"the music could not be read as audio; send {accepted}",
                          code="not_audio")
    if not MIN_MUSIC_S <= duration <= MAX_MUSIC_S:
        raise InvalidInput(f"the music lasts {duration:.1f} s; send {accepted}",
                           code="music_duration")
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(original), "-map", "0:a:0",
         "-ac", "2", "-ar", "48000", "-c:a", "flac", str(out_flac)],
        capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise InvalidInput(f"the music could not be decoded; send {accepted}", code="bad_audio")
    if _peak_db(out_flac, timeout=120) < -50.0:
        raise InvalidInput(f"the music is silent; send {accepted}", code="silent_audio")
    return duration
