"""Checking uploads (file names, display names, voice samples, music) before anything is stored;
pictures are decoded in images.py.

Every rejection raises an `InvalidInput` (or one of its kinds) with a sentence a person can act on.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from orchestrator import audio_decode, voice_sample
from shared.errors import InvalidInput, Malformed, TooLarge
from shared.ffmpeg import run_ffmpeg

MIN_VOICE_S, MAX_VOICE_S = 3.0, 30.0
MIN_MUSIC_S, MAX_MUSIC_S = 1.0, 600.0
MIN_SPEECH_S = 0.3
SPEECH_RATE = 48000  # a recording is kept at this rate: the result's AAC rate
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


def save_limited(upload: Upload, field: str, limit: int, dest: Path) -> int:
    """Copy the upload to `dest` a block at a time; its size. TooLarge past `limit` bytes."""
    size = 0
    with open(dest, "wb") as out:
        while block := upload.file.read(1 << 20):
            size += len(block)
            if size > limit:
                raise TooLarge(f"the {field} upload is larger than "
                               f"{limit // (1024 * 1024)} MB; send a shorter or compressed "
                               "recording (MP3, OGG/Opus, M4A or FLAC)", code="too_large")
            out.write(block)
    if not size:
        raise InvalidInput(f"the {field} upload is empty", code="empty_file")
    return size


def check_voice_sample(original: Path, out_wav: Path) -> float:
    """Validate a voice sample and store it as mono 22.05 kHz WAV; its seconds."""
    accepted = f"a WAV, MP3, FLAC or OGG recording of {MIN_VOICE_S:.0f}-{MAX_VOICE_S:.0f} seconds"
    native = out_wav.with_name(".native.wav")
    try:
        found = audio_decode.decode(original, native, what="voice sample", accepted=accepted,
                                    max_s=MAX_VOICE_S, rate=None, channels=1)
        if found.seconds < MIN_VOICE_S:
            raise InvalidInput(f"the voice sample lasts {found.seconds:.1f} s; send {accepted}",
                               code="voice_duration")
        _convert(native, out_wav, ["-ac", "1", "-ar", "22050", "-c:a", "pcm_s16le"], accepted,
                 "voice sample")
        if _peak_db(out_wav) < -45.0:
            raise InvalidInput("the voice sample is silent; record yourself speaking for "
                               f"{MIN_VOICE_S:.0f}-{MAX_VOICE_S:.0f} seconds",
                               code="silent_audio")
        voice_sample.check(out_wav, native)  # one person speaking: no music, clipping, 2nd voice
    finally:
        native.unlink(missing_ok=True)
    return found.seconds


def _convert(wav: Path, out: Path, args: list[str], accepted: str, what: str) -> None:
    """Re-encode a WAV this server decoded (so no longer the upload) with ffmpeg `args`."""
    proc = run_ffmpeg(["-nostdin", "-v", "error", "-y", "-protocol_whitelist", "file",
                       "-f", "wav", "-i", str(wav), *args, str(out)], timeout=300)
    if proc.returncode != 0:
        out.unlink(missing_ok=True)
        raise InvalidInput(f"the {what} could not be decoded; send {accepted}", code="bad_audio")


def _peak_db(wav: Path) -> float:
    """The loudest sample of a decoded WAV in dBFS; -inf when it is silent."""
    x, _ = audio_decode.read_pcm(wav)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def check_music(original: Path, out_flac: Path) -> float:
    """Validate a music track and store it as 48 kHz stereo FLAC; its seconds.

    Decoding it whole here means a job never meets an undecodable or silent track later.
    """
    accepted = (f"a WAV, MP3, FLAC, OGG or M4A track of {MIN_MUSIC_S:.0f}-{MAX_MUSIC_S:.0f} "
                "seconds (it is looped or cut to the speech)")
    wav = out_flac.with_name(".decoded.wav")
    try:
        found = audio_decode.decode(original, wav, what="music", accepted=accepted,
                                    max_s=MAX_MUSIC_S, rate=48000, channels=2)
        if found.seconds < MIN_MUSIC_S:
            raise InvalidInput(f"the music lasts {found.seconds:.1f} s; send {accepted}",
                               code="music_duration")
        if _peak_db(wav) < -50.0:
            raise InvalidInput(f"the music is silent; send {accepted}", code="silent_audio")
        _convert(wav, out_flac, ["-c:a", "flac"], accepted, "music")
    finally:
        wav.unlink(missing_ok=True)
    return found.seconds


def check_speech(original: Path, out_flac: Path, max_s: float) -> tuple[float, int]:
    """Validate a recording of speech that a job will animate and store it as mono FLAC at
    SPEECH_RATE; (its seconds, the upload's own sample rate).

    Refused: not audio, silent, under MIN_SPEECH_S or over `max_s`, music or a steady sound
    rather than speech, clipped. Several voices are fine (an interview, a podcast)."""
    accepted = ("a recording of speech (WAV, MP3, FLAC, OGG/Opus or M4A/AAC, any sample rate, "
                f"mono or stereo) of {MIN_SPEECH_S:g}-{max_s:.0f} seconds")
    native = out_flac.with_name(".native.wav")
    wav = out_flac.with_name(".decoded.wav")
    try:
        found = audio_decode.decode(original, native, what="speech recording",
                                    accepted=accepted, max_s=max_s, rate=None, channels=1)
        if found.seconds < MIN_SPEECH_S:
            raise InvalidInput(f"the speech recording lasts {found.seconds:.2f} s; send "
                               f"{accepted}", code="speech_duration")
        _convert(native, wav, ["-ar", str(SPEECH_RATE), "-c:a", "pcm_s16le"], accepted,
                 "speech recording")
        if _peak_db(wav) < -50.0:
            raise InvalidInput(f"the speech recording is silent; send {accepted}",
                               code="silent_audio")
        voice_sample.check_speech(wav, native)
        _convert(wav, out_flac, ["-c:a", "flac"], accepted, "speech recording")
    finally:
        native.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)
    return found.seconds, found.rate
