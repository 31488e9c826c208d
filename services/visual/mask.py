"""Person masks for background replacement: video.mp4 -> mask.mkv, frame by frame.

The compositor's venv holds no vision libraries, so the visual stage, which has MediaPipe,
writes the mask the compositor needs: one grey frame per video frame, 255 on the person, 0 on
the background, edges feathered over a few pixels. MediaPipe's selfie segmentation (model
bundled in the mediapipe 0.10.21 wheel, runs offline) gives a person probability per pixel;
it is smoothed over time a little (less edge flicker), mapped through a soft threshold and
blurred. The mask is FFV1 in Matroska: lossless, so 0 and 255 reach the compositor exactly
(H.264 would squeeze them into TV range, 16-235, and 6% of the old background would show).
Frames stream through ffmpeg pipes in and out; the video is never held in memory.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Generator
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np

from shared.errors import StageFailed
from shared.ffmpeg import Pipe, probe

logger = logging.getLogger(__name__)

TEMPORAL = 0.7  # weight of the current frame's probability against the previous frame's
SOFT_LOW, SOFT_HIGH = 0.3, 0.7  # probabilities mapped onto 0..255 with a smoothstep
MODEL_SIDE = 256  # the general selfie model's input size

_segmenter: Any = None


def segmenter() -> Any:
    """MediaPipe's selfie segmentation (general model), loaded once per process."""
    global _segmenter
    if _segmenter is None:
        import mediapipe as mp

        _segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    return _segmenter


def feather_sigma(width: int, height: int) -> float:
    """Blur of the mask's edge in pixels of the frame: ~2 px at 512, growing with the frame."""
    return max(1.0, min(width, height) / 256)


def person_mask(rgb: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 mask at the frame's size, person probability) of one RGB frame.

    `previous` is the last frame's probability. The model sees 256x256 whatever it is given, so
    the frame goes in at ~MODEL_SIDE pixels and the soft mask is scaled up at the end: the
    same mask for a quarter of the per-pixel work at 512 px.
    """
    import cv2

    height, width = rgb.shape[:2]
    scale = min(1.0, MODEL_SIDE / min(width, height))
    small = rgb if scale == 1.0 else cv2.resize(
        rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    prob = np.asarray(segmenter().process(small).segmentation_mask, dtype=np.float32)
    if previous is not None and previous.shape == prob.shape:
        prob = (TEMPORAL * prob + (1.0 - TEMPORAL) * previous).astype(np.float32)
    x = np.clip((prob - SOFT_LOW) / (SOFT_HIGH - SOFT_LOW), 0.0, 1.0)
    alpha = x * x * (3.0 - 2.0 * x)
    sigma = feather_sigma(width, height) * scale
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=sigma, sigmaY=sigma)
    if scale != 1.0:
        alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    return (alpha * 255.0 + 0.5).astype(np.uint8), prob


def read_frames(video: Path, width: int, height: int) -> Generator[np.ndarray, None, None]:
    """Decode `video` frame by frame as HxWx3 RGB arrays, every frame exactly once."""
    pipe = Pipe(["-i", str(video), "-map", "0:v:0", "-fps_mode", "passthrough",
                 "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                f"decoding {video.name}", reads=True)
    size = width * height * 3
    frames = cast(io.BufferedReader, pipe.proc.stdout)
    ok = False
    try:
        while True:
            buf = bytearray(size)
            got = frames.readinto(buf)
            while got and got < size:
                more = frames.readinto(memoryview(buf)[got:])
                if not more:
                    break
                got += more
            if not got:
                break
            if got != size:
                raise StageFailed(f"{video.name}: a frame of {got} bytes; expected {size}")
            yield np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
        ok = True
    finally:
        pipe.finish(kill=not ok)


class MaskWriter:
    """Streams grey uint8 frames into a lossless FFV1 Matroska file; removes it on failure."""

    def __init__(self, out: Path, width: int, height: int, fps: int) -> None:
        self.out, self.n_written = Path(out), 0
        self.frame_size = width * height
        self._pipe = Pipe(["-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{width}x{height}",
                           "-r", str(fps), "-i", "pipe:0", "-c:v", "ffv1", "-level", "3",
                           "-pix_fmt", "gray", str(self.out)],
                          f"writing {self.out.name}", reads=False)

    def write(self, mask: np.ndarray) -> None:
        data = np.ascontiguousarray(mask, dtype=np.uint8)
        if data.size != self.frame_size:
            raise StageFailed(f"mask frame {self.n_written} has {data.size} pixels; "
                              f"expected {self.frame_size}")
        assert self._pipe.proc.stdin is not None
        try:
            self._pipe.proc.stdin.write(data.tobytes())
        except (BrokenPipeError, OSError) as exc:
            self._abort_after(exc)
        self.n_written += 1

    def _abort_after(self, exc: BaseException) -> None:
        try:
            self._pipe.finish()
        finally:
            self.out.unlink(missing_ok=True)
        raise StageFailed(f"ffmpeg stopped while writing {self.out.name}") from exc

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pipe.proc.returncode is not None:
            return  # already finished (a failed write)
        failed = exc_type is not None
        try:
            self._pipe.finish(kill=failed)
        except BaseException:
            self.out.unlink(missing_ok=True)
            raise
        if failed:
            self.out.unlink(missing_ok=True)


def write_mask(video: Path, out: Path, *, fps: int,
               check: Callable[[], None] | None = None) -> int:
    """Segment every frame of `video` into the mask video `out`; returns the frame count.

    `check` is called every few frames so a canceled job stops within a second.
    """
    info = probe(video)
    if not info.width or not info.height:
        raise StageFailed(f"{video} has no picture to segment")
    width, height = info.width, info.height
    started = time.perf_counter()
    previous = None
    with MaskWriter(out, width, height, fps) as writer, \
            closing(read_frames(video, width, height)) as frames:
        for i, frame in enumerate(frames):
            if check is not None and i % 10 == 0:
                check()
            mask, previous = person_mask(frame, previous)
            writer.write(mask)
    if writer.n_written != info.n_frames:
        out.unlink(missing_ok=True)
        raise StageFailed(f"the person mask has {writer.n_written} frames; expected "
                          f"{info.n_frames}, as many as {video.name}")
    logger.info("person mask: %d frames %dx%d in %.2f s", writer.n_written, width, height,
                time.perf_counter() - started)
    return writer.n_written
