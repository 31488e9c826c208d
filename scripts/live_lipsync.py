"""Lip sync inside a recorded live stream, measured as `make quality` measures batch videos: the
mediapipe face mesh on every decoded frame gives the mouth opening, ffmpeg the audio's loudness
per frame; the report is their correlation at each lag and the lag that fits best (0 means in
sync; + means the mouth comes later than the sound). `make bench-live` records the stream of
its latency run to out/live_stream.mp4, and of its 10-minute audio line to out/live_drift.mp4
(`--last 60`: its last minute). Run with .venvs/visual/bin/python.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from quality_report import LAGS, _lagged, features  # noqa: E402


def _size(video: Path) -> tuple[int, int, float]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,r_frame_rate", "-of", "json", str(video)],
                         capture_output=True, text=True, check=True).stdout
    s = json.loads(out)["streams"][0]
    num, den = s["r_frame_rate"].split("/")
    return int(s["width"]), int(s["height"]), float(num) / float(den)


def measure(video: Path, last: float | None = None) -> dict:
    import mediapipe as mp

    width, height, fps = _size(video)
    source = [*(["-sseof", f"-{last}"] if last else []), "-i", str(video)]  # both decodes
    proc = subprocess.Popen(["ffmpeg", "-v", "error", *source, "-f", "rawvideo",
                             "-pix_fmt", "rgb24", "pipe:1"], stdout=subprocess.PIPE)
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True,
                                           max_num_faces=1, min_detection_confidence=0.5)
    lms = []
    n = width * height * 3
    assert proc.stdout is not None
    while len(buf := proc.stdout.read(n)) == n:
        res = mesh.process(np.frombuffer(buf, np.uint8).reshape(height, width, 3))
        if res.multi_face_landmarks:
            lms.append(np.array([(p.x * width, p.y * height)
                                 for p in res.multi_face_landmarks[0].landmark]))
        else:
            lms.append(np.full((478, 2), np.nan))
    proc.wait()
    mesh.close()
    rate = 16000
    audio = np.frombuffer(subprocess.run(
        ["ffmpeg", "-v", "error", *source, "-vn", "-ac", "1", "-ar", str(rate), "-f",
         "f32le", "-"], capture_output=True, check=True).stdout, np.float32)
    frames = len(lms)
    edges = np.round(np.arange(frames + 1) * rate / fps).astype(int)
    rms = np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a and b <= len(audio) else 0.0
                    for a, b in zip(edges[:-1], edges[1:], strict=True)])
    opening = features(np.array(lms))["opening"]
    speaking = rms > 0.01
    r = {lag: _lagged([opening], [rms], lag) for lag in LAGS}
    best = max(r, key=r.get)
    rest = np.nanmedian(opening[~speaking]) if (~speaking).any() else float("nan")
    return {"frames": frames, "fps": fps, "speech_frames": int(speaking.sum()),
            "lipsync_r_lag0": round(r[0], 3), "lipsync_best_lag": int(best),
            "lipsync_r_by_lag": {str(k): round(v, 3) for k, v in r.items()},
            "mouth_open_in_silence": round(float(np.nanmean(opening[~speaking] > rest + 0.05)),
                                           3) if (~speaking).any() else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, nargs="?", default=ROOT / "out/live_stream.mp4")
    parser.add_argument("--out", type=Path, default=ROOT / "out/live_lipsync.json")
    parser.add_argument("--last", type=float, help="measure only the last this many seconds")
    args = parser.parse_args()
    report = measure(args.video, args.last)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "lipsync_r_by_lag"}))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
