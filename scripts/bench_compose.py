"""`make bench`: time of the compose stage with each compose option, ~10 s of speech at 512 px.

Runs in the compositor venv. Real inputs are made first: Piper speech and phoneme timings (in
the audio venv), a 512x512 video of the sample portrait, and its person mask (in the visual venv,
whose time is reported too: a background costs the visual stage that much more). Then each
option set goes through the compose stage's own `encode` (captions written as the stage does),
three times; the median wall time is reported. Writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.compositor.layers import Layers  # noqa: E402
from services.compositor.mixing import MusicBed  # noqa: E402
from services.compositor.worker import encode, write_captions  # noqa: E402
from shared.ffmpeg import probe  # noqa: E402

TEXT_10S = ("Good morning, and welcome. This short message was generated on this machine, from "
            "one photograph and a few lines of text, without sending anything to the cloud.")
FPS = 25

SPEAK = """
import json, sys
from pathlib import Path
from services.audio.engines import SpeechRequest
from services.audio.engines.piper import PiperEngine
from shared.phonemes import to_dicts
request = SpeechRequest(sys.argv[2], Path(sys.argv[3]) / "speech.wav")
speech = PiperEngine(Path(sys.argv[1])).synthesize(request)
(Path(sys.argv[3]) / "phonemes.json").write_text(json.dumps(to_dicts(speech.phonemes)))
print(speech.duration)
"""
SEGMENT = """
import sys, time
from pathlib import Path
from services.visual.mask import segmenter, write_mask
segmenter()
t0 = time.perf_counter()
write_mask(Path(sys.argv[1]), Path(sys.argv[2]), fps=int(sys.argv[3]))
print(time.perf_counter() - t0)
"""


def venv_python(name: str) -> str:
    exe = ROOT / ".venvs" / name / "bin" / "python"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing; run `make setup`")
    return str(exe)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_inputs(folder: Path, size: int, text: str) -> dict:
    """Speech, phonemes, video, mask, music and a background picture under `folder`."""
    out = subprocess.run([venv_python("audio"), "-c", SPEAK, str(ROOT / "models"), text,
                          str(folder)], cwd=ROOT, capture_output=True, text=True, check=True)
    duration = float(out.stdout.strip().splitlines()[-1])
    n = -(-round(duration * FPS * 1000) // 1000)  # ceil(duration x fps), as the renderer does
    video = folder / "video.mp4"
    ffmpeg("-loop", "1", "-framerate", str(FPS), "-i", str(ROOT / "tests/data/portrait.png"),
           "-vf", f"scale={size + 16}:{size + 16},crop={size}:{size}:"  # a slow pan: every
           "x='8+8*sin(2*t)':y='8+6*cos(3*t)'",  # frame differs, as in a rendered video
           "-frames:v", str(n), "-c:v", "libx264", "-preset",
           "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", str(video))
    out = subprocess.run([venv_python("visual"), "-c", SEGMENT, str(video),
                          str(folder / "mask.mkv"), str(FPS)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    mask_s = float(out.stdout.strip().splitlines()[-1])
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:duration=6", "-f", "lavfi", "-i",
           "sine=frequency=330:duration=6", "-filter_complex",
           "[0:a][1:a]amerge=inputs=2,aresample=48000,volume=0.3", "-c:a", "flac",
           str(folder / "music.flac"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1920x1080", "-frames:v", "1",
           str(folder / "background.png"))
    return {"duration": duration, "frames": n, "mask_s": mask_s}


def option_sets(folder: Path, size: int) -> dict[str, dict]:
    base = Layers(size, size, FPS)
    mask = folder / "mask.mkv"
    ass = folder / "captions.ass"
    music = MusicBed(folder / "music.flac", -10.0)
    return {
        "default (video copied)": {"layers": base},
        "captions srt (soft track)": {"layers": base, "soft": True},
        "captions burn": {"layers": replace(base, subtitles=ass)},
        "background colour": {"layers": replace(base, mask=mask, colour="#1e90ff")},
        "background image": {"layers": replace(base, mask=mask, image=folder / "background.png")},
        "music": {"layers": base, "music": music},
        "colour + music + burn": {"layers": replace(base, mask=mask, colour="#1e90ff",
                                                    subtitles=ass), "music": music},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--text", default=TEXT_10S)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--out", type=Path, default=Path("out/bench_compose.json"))
    args = parser.parse_args()
    report: dict = {"size": args.size, "fps": FPS, "crf": args.crf, "runs": args.runs,
                    "options": {}}
    with tempfile.TemporaryDirectory(prefix="bench-compose-") as tmp:
        folder = Path(tmp)
        report.update(make_inputs(folder, args.size, args.text))
        duration = report["duration"]
        print(f"{duration:.2f} s of speech, {report['frames']} frames at {args.size} px; "
              f"person mask (visual stage) {report['mask_s']:.2f} s")
        for name, spec in option_sets(folder, args.size).items():
            times = []
            for run in range(args.runs):
                out = folder / f"result-{run}.mp4"
                t0 = time.perf_counter()
                srt = None  # captions are made (and timed) only where an option needs them
                if spec.get("soft") or spec["layers"].subtitles:
                    srt, _ = write_captions(args.text, folder, duration,
                                            probe(folder / "video.mp4"), folder)
                encode(folder / "video.mp4", folder / "speech.wav", out, layers=spec["layers"],
                       music=spec.get("music"), duration=duration, crf=args.crf,
                       soft_subtitles=srt if spec.get("soft") else None)
                times.append(time.perf_counter() - t0)
                out.unlink()
            median = statistics.median(times)
            report["options"][name] = {"seconds": round(median, 3),
                                       "rtf": round(median / duration, 4),
                                       "runs": [round(t, 3) for t in times]}
            print(f"  {name:<28} {median:6.2f} s  (RTF {median / duration:.3f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
