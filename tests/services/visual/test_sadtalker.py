"""The SadTalker adapter's contract, against a fake installation written here: how it is
validated, which arguments inference.py gets, how the output video is found and streamed, and
what the errors say. The real SadTalker is not run by the tests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines import get_engine
from services.visual.engines.base import RenderSpec
from services.visual.engines.sadtalker import REQUIRED, SadTalkerEngine
from services.visual.face import FaceAnalyzer
from shared.errors import MissingWeights, StageFailed

DATA = Path(__file__).resolve().parents[2] / "data"
SR = 16000

# Writes RESULT_DIR/<timestamp>.mp4 as SadTalker does: the source image's size, 25 fps, as
# long as the audio, plus a decoy mp4 in the per-run folder; records its arguments.
FAKE_INFERENCE = '''
import argparse, json, os, subprocess, sys, time, wave
p = argparse.ArgumentParser()
for a in ("--driven_audio", "--source_image", "--result_dir", "--checkpoint_dir", "--preprocess",
          "--size"):
    p.add_argument(a)
p.add_argument("--still", action="store_true")
args = p.parse_args()
json.dump({"args": vars(args), "cwd": os.getcwd()}, open(os.environ["FAKE_LOG"], "w"))
if os.environ.get("FAKE_FAIL"):
    sys.exit("RuntimeError: CUDA out of memory (fake)")
with wave.open(args.driven_audio) as w:
    seconds = w.getnframes() / w.getframerate()
import cv2
h, w = cv2.imread(args.source_image).shape[:2]
stamp = time.strftime("%Y_%m_%d_%H.%M.%S")
os.makedirs(os.path.join(args.result_dir, stamp), exist_ok=True)
if not os.environ.get("FAKE_NO_OUTPUT"):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={w}x{h}:rate=25:duration={seconds}", "-pix_fmt", "yuv420p",
                    os.path.join(args.result_dir, stamp + ".mp4")], check=True)
print("The generated video is named:", os.path.join(args.result_dir, stamp + ".mp4"))
'''


def fake_install(home: Path) -> Path:
    for rel in REQUIRED:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(b"")
    (home / "inference.py").write_text(FAKE_INFERENCE)
    return home


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log.json"))
    return fake_install(tmp_path / "SadTalker")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / "portrait.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def face(portrait):
    with FaceAnalyzer() as analyzer:
        return analyzer.analyze(portrait)[0]


def test_runs_inference_and_streams_its_frames(home, portrait, face, tmp_path) -> None:
    engine = SadTalkerEngine(tmp_path, home=home, python=sys.executable)
    audio = np.zeros(int(1.2 * SR), np.float32)
    anim = engine.prepare(portrait, face, audio, SR, None, RenderSpec(fps=25, size=256))
    log = json.loads((tmp_path / "log.json").read_text())
    args = log["args"]
    assert Path(log["cwd"]) == home.resolve()
    assert args["still"] and args["preprocess"] == "full" and args["size"] == "256"
    assert args["checkpoint_dir"] == str(home.resolve() / "checkpoints")
    assert args["driven_audio"].endswith("speech.wav") and args["source_image"].endswith(".png")
    assert anim.n_frames == 30
    frames = [anim.frame(i) for i in range(anim.n_frames)]
    assert all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[12])  # testsrc moves: real decoded frames
    assert np.array_equal(anim.frame(7), frames[7])
    with pytest.raises(IndexError):
        anim.frame(30)


def test_home_from_env_and_default(home, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SADTALKER_HOME", str(home))
    monkeypatch.setenv("SADTALKER_PYTHON", sys.executable)
    assert SadTalkerEngine(tmp_path / "elsewhere").home == home.resolve()
    monkeypatch.delenv("SADTALKER_HOME")
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(home, models / "sadtalker")
    assert get_engine("sadtalker")(models).python == sys.executable


def test_missing_installation_and_files(home, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SADTALKER_HOME", raising=False)
    with pytest.raises(MissingWeights, match="no installation at .*sadtalker.*SADTALKER_HOME"):
        SadTalkerEngine(tmp_path / "models")
    (home / "checkpoints/mapping_00109-model.pth.tar").unlink()
    (home / "gfpgan/weights/detection_Resnet50_Final.pth").unlink()
    with pytest.raises(MissingWeights) as err:
        SadTalkerEngine(tmp_path, home=home, python=sys.executable)
    assert "checkpoints/mapping_00109-model.pth.tar" in str(err.value)
    assert "gfpgan/weights/detection_Resnet50_Final.pth" in str(err.value)
    fake_install(home)
    with pytest.raises(MissingWeights, match="SADTALKER_PYTHON"):
        SadTalkerEngine(tmp_path, home=home, python=str(tmp_path / "no-python"))


def test_failures_are_reported(home, portrait, face, tmp_path, monkeypatch) -> None:
    engine = SadTalkerEngine(tmp_path, home=home, python=sys.executable)
    audio = np.zeros(SR, np.float32)
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(StageFailed, match="(?s)exited with 1.*CUDA out of memory"):
        engine.prepare(portrait, face, audio, SR, None, RenderSpec(size=256))
    monkeypatch.delenv("FAKE_FAIL")
    monkeypatch.setenv("FAKE_NO_OUTPUT", "1")
    with pytest.raises(StageFailed, match="(?s)left no .mp4.*The generated video is named"):
        engine.prepare(portrait, face, audio, SR, None, RenderSpec(size=256))
