"""Wav2Lip: the network matches the official checkpoint layout, a checkpoint in the official
format loads through the real code, and a clip renders end to end through the chunk lanes.

The weights are random (the real ones cannot be shipped); everything else is real: the cached
face landmarks of tests/data/portrait.png, the mel features, ffmpeg encoding and decoding.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from services.visual.encode import ChunkEncoder
from services.visual.engines import get_engine
from services.visual.engines import mel as melspec
from services.visual.engines.base import RenderSpec
from services.visual.engines.wav2lip import CHECKPOINT, Wav2LipEngine
from services.visual.engines.wav2lip_model import Wav2Lip, strip_prefix
from services.visual.face import FaceAnalyzer
from services.visual.framing import frame_face
from services.visual.progressive import ChunkGrid, ChunkLanes
from shared.errors import MissingWeights
from shared.ffmpeg import probe
from shared.pieces import CHUNKS, PieceFiles, UnannouncedWriter

DATA = Path(__file__).resolve().parents[2] / "data"
SR = 16000
SIZE, FPS = 256, 25


def buzz(seconds: float) -> np.ndarray:
    """A 150 Hz voice-like buzz with harmonics, amplitude-modulated at a 4 Hz syllable rate."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    return (0.3 * wave * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t))).astype(np.float32)


def official_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-init Wav2Lip saved as the official files are: DataParallel names + extras."""
    torch.manual_seed(seed)
    model = Wav2Lip()
    for m in model.modules():  # non-trivial batch-norm statistics, so folding them is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = model.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()},
                "global_step": 1, "global_epoch": 1}, path)
    return state


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    official_checkpoint(root / CHECKPOINT)
    return root


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / "portrait.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def face(portrait):
    with FaceAnalyzer() as analyzer:
        return analyzer.analyze(portrait)[0]


@pytest.fixture(scope="module")
def engine(models_dir) -> Wav2LipEngine:
    torch.manual_seed(0)
    return get_engine("wav2lip")(models_dir)


def test_state_dict_matches_the_official_layout() -> None:
    expected = [line.rstrip("\n").split("\t")
                for line in (DATA / "wav2lip_state_dict.tsv").read_text().splitlines()]
    assert len(expected) == 352
    actual = [("module." + k, str(tuple(v.shape))) for k, v in Wav2Lip().state_dict().items()]
    assert sorted(actual) == sorted((name, shape) for name, shape in expected)


def test_official_format_loads_strictly(tmp_path) -> None:
    state = official_checkpoint(tmp_path / "ckpt.pth", seed=1)
    loaded = torch.load(tmp_path / "ckpt.pth", map_location="cpu", weights_only=True)
    model = Wav2Lip()
    result = model.load_state_dict(strip_prefix(loaded["state_dict"]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    mel, faces = torch.rand(2, 1, 80, 16) * 8 - 4, torch.rand(2, 6, 96, 96)
    with torch.inference_mode():
        out = model.eval()(mel, faces)
    assert out.shape == (2, 3, 96, 96) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_engine_output_matches_the_plain_network(engine, models_dir) -> None:
    """The engine folds batch norms and encodes the still face once: same numbers as the
    plain network run per frame."""
    plain = Wav2Lip()
    plain.load_state_dict(strip_prefix(torch.load(models_dir / CHECKPOINT,
                                                  weights_only=True)["state_dict"]))
    face = torch.rand(1, 6, 96, 96)
    mel = torch.rand(3, 1, 80, 16) * 8 - 4
    with torch.inference_mode():
        expected = plain.eval()(mel, face.expand(3, -1, -1, -1))
        got = engine.model.decode(mel, engine.model.encode_face(face))
    assert torch.allclose(got, expected, atol=1e-4)


def test_missing_checkpoint_names_the_file(tmp_path) -> None:
    with pytest.raises(MissingWeights) as err:
        Wav2LipEngine(tmp_path)
    assert "wav2lip_gan.pth" in str(err.value) and "scripts/download_models.sh" in str(err.value)


def test_mel_shape_and_range() -> None:
    mel = melspec.melspectrogram(buzz(1.0))
    assert mel.shape == (80, 81)  # 1 + 16000 // 200 frames
    assert mel.dtype == np.float32 and mel.min() >= -4 and mel.max() <= 4
    assert mel.max() > 0 > mel.min()  # the buzz is loud in some bands and absent in others
    assert np.allclose(melspec.melspectrogram(np.zeros(SR, np.float32)), -4)
    windows = melspec.mel_windows(mel, 25, 25)
    assert windows.shape == (25, 80, 16)
    assert np.array_equal(windows[10], mel[:, 32:48])  # int(80 * 10 / 25) = 32
    assert np.array_equal(windows[24], mel[:, 65:81])  # clamped to the last 16 frames
    assert melspec.resample(np.zeros(22050, np.float32), 22050).shape == (16000,)


def test_renders_a_clip_that_changes_only_the_lower_face(engine, portrait, face, tmp_path):
    audio = buzz(1.0)
    anim = engine.prepare(portrait, face, audio, SR, None, RenderSpec(fps=FPS, size=SIZE))
    assert anim.n_frames == 25
    base, _ = frame_face(portrait, face.landmarks.astype(np.float64), (SIZE, SIZE))
    region = anim._alpha > 0
    x, y, w, h = anim.mouth_box
    box_region = region[y:y + h, x:x + w]
    assert box_region.any() and not box_region.all()  # an ellipse, not a box
    outside = ~region

    frames = [anim.frame(i) for i in range(anim.n_frames)]
    for f in frames:
        assert f.shape == (SIZE, SIZE, 3) and f.dtype == np.uint8
        assert np.array_equal(f[outside], base[outside])  # exact, pixel for pixel
    changed = np.abs(frames[5].astype(int) - base).max(axis=2) > 8
    assert changed[region].mean() > 0.2  # the generated lower face really is blended in
    assert np.array_equal(anim.frame(3), frames[3])  # pure in i, across batch reloads

    out = UnannouncedWriter(PieceFiles(tmp_path / "chunks", CHUNKS))
    lanes = ChunkLanes(out, "h", (SIZE, SIZE), FPS, 1, lambda: None, lambda n: None)
    grid = ChunkGrid(10, 10)
    for k in range(grid.count(anim.n_frames)):
        lanes.submit(anim, k, grid.frames(k, anim.n_frames))
    lanes.finish()
    chunks = [out.files.data(k) for k in range(grid.count(anim.n_frames))]
    assert len(chunks) == 3
    for chunk in chunks:
        info = probe(chunk)
        assert (info.width, info.height) == (SIZE, SIZE)
    video = np.concatenate([decode(chunk) for chunk in chunks])
    assert len(video) == anim.n_frames
    # away from the blend region (by more than a macroblock) the clip differs from the framed
    # portrait by no more than the still portrait itself does after the same encoder
    with ChunkEncoder(tmp_path / "rest.mp4", SIZE, SIZE, FPS, gop=10) as still:
        still.write(cv2.cvtColor(base, cv2.COLOR_RGB2YUV_I420))
    far = cv2.dilate(region.astype(np.uint8), np.ones((33, 33), np.uint8)) == 0
    noise = np.abs(decode(tmp_path / "rest.mp4")[0][far].astype(int) - base[far]).mean()
    for f in video:
        assert np.abs(f[far].astype(int) - base[far]).mean() <= 1.25 * noise + 0.25


def decode(video: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, SIZE, SIZE, 3)


def test_a_tight_photo_is_framed_as_the_portrait_renderer_frames_it(engine, portrait):
    """The hair touches the photo's top: both renderers start from the same moved frame."""
    from services.visual.engines.portrait import PortraitEngine

    crop = np.ascontiguousarray(portrait[60:300, 150:330])
    with FaceAnalyzer() as analyzer:
        tight = analyzer.analyze(crop)[0]
    spec = RenderSpec(fps=FPS, size=SIZE)
    anim = engine.prepare(crop, tight, buzz(0.4), SR, None, spec)
    reference = PortraitEngine().prepare(crop, tight, buzz(0.4), SR, None, spec)._base
    outside = anim._alpha == 0
    assert np.array_equal(anim.frame(3)[outside], reference[outside])
    top = reference[:8].astype(np.float32).mean(axis=2)
    assert np.abs(np.diff(top, axis=0)).mean() > 0.25 * np.abs(np.diff(top, axis=1)).mean()
