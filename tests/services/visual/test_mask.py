"""Person masks with MediaPipe's bundled selfie segmentation on the real test portrait."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from video_files import write_video

from services.visual.mask import write_mask
from shared.errors import Canceled, StageFailed
from shared.ffmpeg import probe
from shared.pipeline import MASK

DATA = Path(__file__).resolve().parents[2] / "data"
FPS, N = 25, 12


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / "portrait.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def video(portrait: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N frames of the portrait (512x512), shifted a few pixels per frame like a moving head."""
    out = tmp_path_factory.mktemp("seg") / "video.mp4"
    return write_video(out, (np.ascontiguousarray(np.roll(portrait, i // 3, axis=1))
                             for i in range(N)), 512, 512, FPS)


@pytest.fixture(scope="module")
def masks(video: Path) -> np.ndarray:
    out = video.parent / MASK
    assert write_mask(video, out, fps=FPS) == N
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(out), "-f", "rawvideo",
                          "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 512, 512)


def test_mask_is_lossless_grey_with_one_frame_per_video_frame(video: Path,
                                                              masks: np.ndarray) -> None:
    info = probe(video.parent / MASK)
    assert (info.video_codec, info.pix_fmt, info.width, info.height) == ("ffv1", "gray", 512,
                                                                         512)
    assert info.n_frames == N == len(masks) and info.fps == FPS


def test_mask_covers_the_face_and_not_the_corners(masks: np.ndarray) -> None:
    for mask in masks:
        face = mask[50:140, 195:255]  # forehead to mouth of the test portrait
        assert face.min() >= 250, face.min()
        for corner in (mask[:48, :48], mask[:48, -48:]):  # flag, studio backdrop
            assert corner.max() == 0, corner.max()
        body = mask[300:480, 100:300]  # the orange suit
        assert np.mean(body == 255) > 0.95


def test_edges_are_feathered_not_cut(masks: np.ndarray) -> None:
    mask = masks[0].astype(np.int32)
    soft = (mask > 10) & (mask < 245)
    assert 0.003 < soft.mean() < 0.05  # a thin band of in-between values...
    edge = np.abs(np.diff(mask, axis=1)).max()
    assert edge < 200  # ...so no jump from 0 to 255 between two neighbouring pixels
    row = mask[120]  # across the head: rises over a few pixels on each side
    rising = np.flatnonzero((row > 10) & (row < 245))
    assert len(rising) >= 2


def test_mask_follows_the_moving_head(masks: np.ndarray) -> None:
    def centre(mask: np.ndarray) -> float:
        cols = np.flatnonzero(mask[20:170].max(axis=0) > 128)  # head only
        return float(cols.mean())

    assert centre(masks[-1]) - centre(masks[0]) == pytest.approx((N - 1) // 3, abs=1.5)


def test_a_damaged_video_fails_and_leaves_no_mask(video: Path, tmp_path: Path) -> None:
    broken = tmp_path / "video.mp4"
    data = video.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / MASK
    with pytest.raises(StageFailed):
        write_mask(broken, out, fps=FPS)
    assert not out.exists()


def test_cancel_stops_and_leaves_no_mask(video: Path, tmp_path: Path) -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 1:
            raise Canceled("job was canceled")

    out = tmp_path / MASK
    with pytest.raises(Canceled):
        write_mask(video, out, fps=FPS, check=check)
    assert not out.exists() and len(calls) == 2
