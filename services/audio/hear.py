"""Phones heard in a media file's audio, for judging a finished video from the outside.

`python -m services.audio.hear FILE [FILE ...]` (in .venvs/audio) decodes each file's first audio
stream with ffmpeg to 16 kHz mono and names its phones with PocketSphinx's phone recogniser
(`alignment.Aligner.recognise`: no transcript, no timings from whoever made the file). It prints
one JSON object, `{"FILE": [{"phone": "M", "start": 0.41, "end": 0.49}, ...], ...}`: CMU
(ARPAbet) phones, "SIL" for silence and noise, times in seconds. `make quality` reads it
(scripts/quality_report.py) to find the frames of p/b/m and of the vowels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.audio.alignment import ARPABET, RATE, Aligner, Timed
from shared.errors import InvalidInput
from shared.ffmpeg import run_ffmpeg
from shared.phonemes import SILENCE

SIL = "SIL"
_CMU = {ipa: arpa for arpa, ipa in ARPABET.items()} | {SILENCE: SIL}


def decode(path: Path) -> bytes:
    """The first audio stream of `path` as 16 kHz mono s16le; InvalidInput if there is none."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file; expected a video or audio file to listen to")
    try:
        proc = run_ffmpeg(["-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
                           "-ac", "1", "-ar", str(RATE), "-f", "s16le", "pipe:1"], timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidInput(f"{path}: ffmpeg could not be run on it ({exc})") from exc
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode(errors="replace").strip()[-300:] or "no audio samples"
        raise InvalidInput(f"{path}: no audio stream ffmpeg can decode ({why}); expected a file "
                           "with sound")
    return proc.stdout


def hear(path: Path, aligner: Aligner) -> list[Timed]:
    """The phones recognised in `path`'s audio, CMU symbols, in time order."""
    phones = aligner.recognise(decode(path))
    return [Timed(_CMU.get(p.label, SIL), p.start, p.end) for p in phones]


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m services.audio.hear FILE [FILE ...]\n")
        return 2
    aligner, heard = Aligner(), {}
    for name in argv:
        try:
            phones = hear(Path(name), aligner)
        except InvalidInput as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        heard[name] = [{"phone": p.label, "start": round(p.start, 3), "end": round(p.end, 3)}
                       for p in phones]
    sys.stdout.write(json.dumps(heard) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
