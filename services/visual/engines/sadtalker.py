"""SadTalker renderer: an adapter to a SadTalker installation the user provides.

SadTalker (github.com/OpenTalker/SadTalker) has its own heavy dependencies, so it runs as a
subprocess with its own interpreter: `inference.py --driven_audio speech.wav --source_image
portrait.png --result_dir DIR --still --preprocess full --size 256`. The source image is the
portrait already framed as the portrait engine frames it (a size x size square), so with
`--preprocess full` SadTalker pastes the animated face back into a frame of that size. Its
output, DIR/<timestamp>.mp4, is decoded once by ffmpeg into a raw frame file, which
`SadTalkerAnimation.frame(i)` reads (pure in i).

Where it lives: SADTALKER_HOME (default MODELS_DIR/sadtalker, where the orchestrator checks
for its files); the interpreter: SADTALKER_PYTHON, else SADTALKER_HOME/venv/bin/python, else
python3 on PATH.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import wave
import weakref
from pathlib import Path

import cv2
import numpy as np

from services.visual.engines.base import RenderSpec
from services.visual.face import FaceInfo
from services.visual.framing import frame_input
from shared import engine_catalog
from shared.errors import MissingWeights, StageFailed
from shared.ffmpeg import ffmpeg
from shared.phonemes import Phoneme

logger = logging.getLogger(__name__)

SPEC = engine_catalog.RENDERERS["sadtalker"]
# relative to SADTALKER_HOME: what `inference.py --preprocess full --size 256 --still` reads
REQUIRED = tuple(Path(f).relative_to(engine_catalog.SADTALKER_DIR).as_posix() for f in SPEC.files)
FACE_SIZE = 256
TIMEOUT_S = 3600.0


def _tail(text: bytes, lines: int = 15) -> str:
    return "\n".join(text.decode("utf-8", "replace").strip().splitlines()[-lines:])


class SadTalkerEngine:
    """Runs a user-installed SadTalker on the framed portrait and speech; streams its frames."""

    name = "sadtalker"
    version = "1"

    def __init__(self, models_dir: Path, *, home: Path | None = None, python: str | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        env_home = os.environ.get("SADTALKER_HOME")
        default = Path(models_dir) / engine_catalog.SADTALKER_DIR
        self.home = Path(home or env_home or default).resolve()
        source = ("the home argument" if home else "SADTALKER_HOME" if env_home
                  else "MODELS_DIR/sadtalker (SADTALKER_HOME is not set)")
        if not self.home.is_dir():
            raise MissingWeights(f"sadtalker: no installation at {self.home} (from {source}); "
                                 "clone github.com/OpenTalker/SadTalker there, run its "
                                 "scripts/download_models.sh, and set SADTALKER_HOME")
        missing = [f for f in REQUIRED if not (self.home / f).is_file()]
        if missing:
            raise MissingWeights(f"sadtalker: the installation at {self.home} (from {source}) "
                                 f"lacks {', '.join(missing)}; run SadTalker's "
                                 "scripts/download_models.sh there")
        self.python = self._interpreter(python)
        self.timeout_s = timeout_s

    def _interpreter(self, python: str | None) -> str:
        chosen = python or os.environ.get("SADTALKER_PYTHON")
        if chosen is None and (self.home / "venv/bin/python").is_file():
            chosen = str(self.home / "venv/bin/python")
        chosen = chosen or "python3"
        found = shutil.which(chosen)
        if found is None:
            raise MissingWeights(f"sadtalker: interpreter {chosen!r} was not found or is not "
                                 "executable; set SADTALKER_PYTHON to the python that has "
                                 "SadTalker's requirements installed")
        return found

    def prepare(self, portrait_rgb: np.ndarray, face: FaceInfo, audio: np.ndarray,
                sample_rate: int, phonemes: list[Phoneme] | None, spec: RenderSpec
                ) -> SadTalkerAnimation:
        base, _, samples, n = frame_input(portrait_rgb, face, audio, sample_rate, spec)
        work = Path(tempfile.mkdtemp(prefix="jayavatar-sadtalker-"))
        try:
            cv2.imwrite(str(work / "portrait.png"), cv2.cvtColor(base, cv2.COLOR_RGB2BGR))
            _write_wav(work / "speech.wav", samples, int(sample_rate))
            video = self.run(work / "portrait.png", work / "speech.wav", work / "results")
            frames = decode(video, work / "frames.rgb", spec.frame, spec.fps)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        logger.info("sadtalker: %d frames decoded from %s (%d expected)", len(frames), video, n)
        return SadTalkerAnimation(frames, n, work)

    def run(self, image: Path, speech: Path, result_dir: Path) -> Path:
        """Run SadTalker's inference.py; return the video it made."""
        result_dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, str(self.home / "inference.py"), "--driven_audio", str(speech),
               "--source_image", str(image), "--result_dir", str(result_dir),
               "--checkpoint_dir", str(self.home / "checkpoints"), "--still",
               "--preprocess", "full", "--size", str(FACE_SIZE)]
        logger.info("sadtalker: running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=self.home, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StageFailed(f"sadtalker: inference.py ran past {self.timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            raise StageFailed(f"sadtalker: inference.py exited with {proc.returncode}:\n"
                              f"{_tail(proc.stderr or proc.stdout)}")
        return find_output(result_dir, proc.stdout)


def find_output(result_dir: Path, stdout: bytes = b"") -> Path:
    """SadTalker writes RESULT_DIR/<YYYY_MM_DD_HH.MM.SS>.mp4 (and prints its name): the newest
    mp4 directly in the result dir, else the newest anywhere below it (--verbose keeps more)."""
    videos = sorted(result_dir.glob("*.mp4"), key=lambda p: p.stat().st_mtime)
    videos = videos or sorted(result_dir.rglob("*.mp4"), key=lambda p: p.stat().st_mtime)
    if not videos:
        raise StageFailed(f"sadtalker: inference.py succeeded but left no .mp4 in {result_dir}; "
                          f"its last output lines:\n{_tail(stdout)}")
    return videos[-1]


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())


def decode(video: Path, out: Path, frame: tuple[int, int], fps: int) -> np.ndarray:
    """All frames of `video` at `fps`, scaled to cover `frame` (width, height) and centre-cropped
    to it, as a read-only (n, height, width, 3) uint8 memory map of the raw file `out`."""
    width, height = frame
    vf = (f"fps={fps},scale={width}:{height}:force_original_aspect_ratio=increase:flags=area,"
          f"crop={width}:{height}")
    ffmpeg(["-i", str(video), "-an", "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", str(out)],
           f"decoding SadTalker's video {video}", out)
    frame_bytes = width * height * 3
    n = out.stat().st_size // frame_bytes
    if n == 0:
        raise StageFailed(f"sadtalker: {video} has no video frames")
    return np.memmap(out, dtype=np.uint8, mode="r", shape=(n, height, width, 3))


class SadTalkerAnimation:
    """SadTalker's decoded frames, fitted to the speech: n_frames long, the last frame held if
    SadTalker's video is shorter. The raw frame file is removed with the animation."""

    thread_safe = SPEC.thread_safe  # frame(i) only reads the decoded frames

    def __init__(self, frames: np.ndarray, n_frames: int, work: Path) -> None:
        self._frames = frames
        self.n_frames = n_frames
        self.height, self.width = frames.shape[1:3]
        self.mouth_box = (0, 0, self.width, self.height)  # SadTalker moves the whole head
        self._cleanup = weakref.finalize(self, shutil.rmtree, work, True)

    def frame(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range 0..{self.n_frames - 1}")
        return np.ascontiguousarray(self._frames[min(int(i), len(self._frames) - 1)])
