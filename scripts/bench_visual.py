"""Speed and memory of the visual stage alone: prepare + draw + encode + join, as the worker
runs them.

For each size (256/512/1024) and clip length (10 s and 5 min by default) a fresh Python process
renders speech-like audio (a voiced buzz with syllable-rate modulation and pauses) with the
`portrait` engine on tests/data/portrait.png through the visual stage's own loop
(`services.visual.progressive.draw_chunks`: chunks drawn in lanes, encoded in-process by x264,
published as pieces, then joined; scripts/bench_clip.py) into a temp dir, and reports frames/s,
the time spent drawing frames vs the rest (encoding, publishing, joining), and peak memory (the
process's sampled RSS and VmHWM). `--explore` then splits the 512 px cost (drawing alone, the
chunk encoder alone per x264 preset/threads). Writes out/bench_visual.json. Run with
.venvs/visual/bin/python; CPU-bound, so the machine's load average is printed next to every
figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SR, FPS = 16000, 25


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A 120 Hz buzz with harmonics, 4-5 syllables a second, a pause every few seconds
    (float32, made a second at a time so the input itself does not weigh on peak memory)."""
    rng = np.random.default_rng(seed)
    period = rng.uniform(3, 5)
    out = np.empty(int(seconds * SR), np.float32)
    for lo in range(0, len(out), SR):
        t = np.arange(lo, min(lo + SR, len(out))) / SR
        buzz = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 8))
        syllables = 0.5 - 0.5 * np.cos(2 * np.pi * 4.5 * t + 2 * np.sin(2 * np.pi * 0.3 * t))
        pauses = (np.sin(2 * np.pi * t / period) > -0.8).astype(float)
        out[lo:lo + len(t)] = 0.25 * buzz * syllables * pauses
    return out


def load_avg() -> float:
    return os.getloadavg()[0]


class _RssSampler(threading.Thread):
    """Samples this process's VmRSS every 50 ms; keeps the peak and the value at the end."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            self.peak_mb = max(self.peak_mb, _status_mb("VmRSS"))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Timed:
    """An animation that counts the seconds spent drawing frames (summed over the lanes)."""

    def __init__(self, anim) -> None:
        self._anim, self.seconds = anim, 0.0
        self.n_frames, self.width, self.height = anim.n_frames, anim.width, anim.height
        self.mouth_box, self.thread_safe = anim.mouth_box, anim.thread_safe
        self._lock = threading.Lock()

    def frame(self, i: int) -> np.ndarray:
        t0 = time.perf_counter()
        out = self._anim.frame(i)
        with self._lock:
            self.seconds += time.perf_counter() - t0
        return out


class _TimedEngine:
    """The engine, its animations timed (`_Timed`)."""

    def __init__(self, engine) -> None:
        self._engine, self.name, self.version = engine, engine.name, engine.version
        self.drawn: list[_Timed] = []

    def prepare(self, *args):
        self.drawn.append(_Timed(self._engine.prepare(*args)))
        return self.drawn[-1]


def _portrait():
    import cv2

    from services.visual.face import FaceAnalyzer

    image = cv2.cvtColor(cv2.imread(str(ROOT / "tests/data/portrait.png")), cv2.COLOR_BGR2RGB)
    with FaceAnalyzer() as analyzer:
        face = analyzer.analyze(image)[0]
    return image, face


def _setup(size: int, seconds: float):
    from services.visual.engines.base import RenderSpec
    from services.visual.engines.portrait import PortraitEngine

    image, face = _portrait()
    audio = speechlike(seconds)
    t0 = time.perf_counter()
    anim = PortraitEngine().prepare(image, face, audio, SR, None, RenderSpec(fps=FPS, size=size))
    return anim, time.perf_counter() - t0


def _cpu_s() -> float:
    me, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                   resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one(size: int, seconds: float, preset: str, lanes: int) -> dict:
    """One measurement, in this (fresh) process: the speech drawn, encoded, published and
    joined by the visual stage's own loop (bench_clip.render_clip), then probed."""
    from bench_clip import render_clip

    from services.visual.engines.base import RenderSpec
    from services.visual.engines.portrait import PortraitEngine
    from shared.ffmpeg import probe

    rss_before = _status_mb("VmRSS")
    sampler = _RssSampler()
    sampler.start()
    load0 = load_avg()
    image, face = _portrait()
    audio = speechlike(seconds)
    engine = _TimedEngine(PortraitEngine())
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "video.mp4"
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        drawn, _ = render_clip(engine, image, face, audio, SR, None,
                               RenderSpec(fps=FPS, size=size), video, lanes=lanes, preset=preset)
        t_total = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
        assert probe(video).n_frames == drawn.n_frames
    sampler.stop()
    n, t_prepare = drawn.n_frames, drawn.prepare_s
    t_render = t_total - t_prepare
    draw_s = sum(t.seconds for t in engine.drawn)
    return {
        "size": size, "seconds": seconds, "frames": n, "preset": preset, "lanes": lanes,
        "prepare_s": round(t_prepare, 2), "render_encode_s": round(t_render, 2),
        "fps": round(n / t_total, 1),
        "fps_render_encode": round(n / t_render, 1),
        "draw_s": round(draw_s, 2), "draw_fps": round(n / draw_s, 1),
        "other_s": round(t_render - draw_s, 2),  # encoding, publishing, joining (net of lanes)
        "render_encode_cpu_s": round(cpu, 2),
        "rss_start_mb": round(rss_before, 1), "rss_peak_mb": round(sampler.peak_mb, 1),
        "python_hwm_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg": round((load0 + load_avg()) / 2, 2),
    }


def encode_only(size: int, frames: list[np.ndarray], n: int, preset: str,
                threads: int | None) -> dict:
    """The chunk encoder alone (services/visual/encode.py), fed pre-drawn frames."""
    import cv2

    from services.visual.encode import ChunkEncoder

    i420 = [cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420) for f in frames]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e.mp4"
        load0 = load_avg()
        t0 = time.perf_counter()
        with ChunkEncoder(out, size, size, FPS, gop=n, preset=preset, threads=threads) as enc:
            for i in range(n):
                enc.write(i420[i % len(i420)])
        dt = time.perf_counter() - t0
        kb = out.stat().st_size / 1024
    label = f"-preset {preset}" + (f" -threads {threads}" if threads else "")
    return {"x264": label, "fps": round(n / dt, 1), "kb_per_s": round(kb / (n / FPS), 1),
            "load_avg": round((load0 + load_avg()) / 2, 2)}


def explore(size: int = 512, seconds: float = 10.0) -> dict:
    """Where the time goes at one size: drawing frames (and its parts) vs encoding."""
    anim, _ = _setup(size, seconds)
    n = anim.n_frames
    t0 = time.perf_counter()
    frames = [anim.frame(i) for i in range(n)]
    draw_fps = n / (time.perf_counter() - t0)
    parts = {}
    tr = anim.tracks
    base = anim._base
    img = base.copy()
    reps = 100
    talk = int(np.argmax(tr.opening))
    for name, fn in {
        "copy base": lambda: base.copy(),
        "mouth warp+paint": lambda: anim._mouth.apply(base, img, float(tr.opening[talk]),
                                                      float(tr.lateral[talk])),
        "eyes (blink)": lambda: [e.apply(base, img, 0.8) for e in anim._eyes],
        "head pose warp": lambda: anim._pose.apply(img, 2.0, 1.0, 0.01, 1.0),
    }.items():
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        parts[name] = round(1000 * (time.perf_counter() - t0) / reps, 3)
    roi = anim._pose.roi
    out = {"size": size, "draw_fps": round(draw_fps, 1), "ms_per_call": parts,
           "pose_roi_px": [roi[2] - roi[0], roi[3] - roi[1]],
           "mouth_roi_px": [anim._mouth.roi[2] - anim._mouth.roi[0],
                            anim._mouth.roi[3] - anim._mouth.roi[1]],
           "blink_frames_pct": round(100 * float(np.mean(tr.blink > 0.01)), 1),
           "encode_only": []}
    for preset, threads in (("veryfast", None), ("veryfast", 1), ("superfast", None),
                            ("superfast", 1), ("ultrafast", None)):
        out["encode_only"].append(encode_only(size, frames, n, preset, threads))
    return out


def chunks_preset() -> str:
    from services.visual.encode import ENCODE_PRESET

    return ENCODE_PRESET


def _child(args: list[str]) -> dict:
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"bench child {args} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024])
    parser.add_argument("--seconds", type=float, nargs="*", default=[10, 300])
    parser.add_argument("--presets", nargs="*", default=[chunks_preset()],
                        help="x264 presets to run every size/length with (the chunks' preset)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each clip of up to 60 s; the median is reported")
    parser.add_argument("--explore", action="store_true", help="also split the 512 px cost")
    parser.add_argument("--out", type=Path, default=ROOT / "out/bench_visual.json")
    parser.add_argument("--lanes", type=int, nargs="*", default=[0],
                        help="render lanes to run every size/length with (0: one per usable "
                             "core, as the visual worker does by default)")
    parser.add_argument("--one", nargs=4, metavar=("SIZE", "SECONDS", "PRESET", "LANES"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--explore-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        from services.visual.progressive import usable_cpus

        lanes = int(args.one[3]) or usable_cpus()
        print(json.dumps(one(int(args.one[0]), float(args.one[1]), args.one[2], lanes)))
        return 0
    if args.explore_child:
        print(json.dumps(explore()))
        return 0
    print(f"{os.cpu_count()} CPUs, load average {load_avg():.2f} at start")
    head = (f"{'size':>5} {'clip s':>7} {'preset':>9} {'lanes':>5} {'frames':>6} {'fps':>6} "
            f"{'draw fps':>8} {'draw s':>7} {'other s':>7} {'cpu s':>7} {'rss peak':>8} "
            f"{'load':>5}")
    print(head)
    runs = []
    for preset, lanes in itertools.product(args.presets, args.lanes):
        for size in args.sizes:
            for seconds in args.seconds:
                # short clips are over in a second, at the mercy of whatever else the machine
                # does: the median of a few runs, with the spread
                tries = [_child(["--one", str(size), str(seconds), preset, str(lanes)])
                         for _ in range(args.repeat if seconds <= 60 else 1)]
                r = sorted(tries, key=lambda t: t["fps"])[len(tries) // 2]
                r["fps_runs"] = [t["fps"] for t in tries]
                runs.append(r)
                print(f"{r['size']:>5} {r['seconds']:>7.0f} {preset:>9} {r['lanes']:>5} "
                      f"{r['frames']:>6} "
                      f"{r['fps']:>6.1f} {r['draw_fps']:>8.1f} {r['draw_s']:>7.1f} "
                      f"{r['other_s']:>7.1f} {r['render_encode_cpu_s']:>7.1f} "
                      f"{r['rss_peak_mb']:>8.0f} {r['load_avg']:>5.2f}"
                      + (f"  (fps of {len(tries)} runs: {min(r['fps_runs'])}-"
                         f"{max(r['fps_runs'])})" if len(tries) > 1 else ""), flush=True)
    report = {"cpus": os.cpu_count(), "fps": FPS, "runs": runs}
    if args.explore:
        report["explore_512"] = ex = _child(["--explore-child"])
        print(f"512 px, frames drawn alone: {ex['draw_fps']} fps; ms per call: {ex['ms_per_call']}")
        for e in ex["encode_only"]:
            print(f"  encode only, x264 {e['x264']:<32} {e['fps']:>6.1f} fps "
                  f"{e['kb_per_s']:>7.1f} kB/s (load {e['load_avg']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
