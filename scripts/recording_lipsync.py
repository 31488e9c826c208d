"""`make quality` (second part): lip sync of jobs made from recordings, measured on the videos.

Recordings: the real LJ Speech and CMU ARCTIC clips of tests/data/speech (the second held out),
espeak-ng voices (several accents and rates) and Piper's own speech fed back as a recording.
Each goes through the real `recording` audio engine (in .venvs/audio) three ways: its
transcript aligned ("aligned"), phones recognised without one ("recognised"), and the sound
alone ("sound", as for a language the recogniser does not cover); Piper's speech also through
the text path's own timings ("text"). Every clip is
rendered by the portrait engine onto tests/data/portrait.png and measured from the decoded MP4
with the face mesh, as `make quality` does (scripts/quality_report.py): lip-sync r at lag 0 and
the best lag, p/b/m closed (the bilabials' times come from the transcript's alignment), and what
the analysis cost against the recording's length. The `heldout` set (other voices, other texts)
is never looked at while tuning: report it, do not tune on it.

Run with .venvs/visual/bin/python. Writes out/recordings/report.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import quality_report as q  # noqa: E402

from services.visual.engines.portrait import PortraitEngine  # noqa: E402
from services.visual.face import FaceAnalyzer  # noqa: E402

LJ = ROOT / "tests/data/speech/LJ050-0131.wav"
LJ_TEXT = ("unless a system is established for the frequent formal review of activities "
           "thereunder. In this regard")
ARCTIC = ROOT / "tests/data/speech/arctic_a0007.wav"  # real, held out
ARCTIC_TEXT = "And you always want to see it in the superlative degree."
TUNE_TEXTS = [
    "Peter Piper picked a peck of pickled peppers, and Bob brought the big blue balloons.",
    "Would you like to go for a walk down to the old boat house before the moon comes up?",
]
HELDOUT_TEXTS = [
    "My brother bought a map of the bay, but the maps were old and the paper was brittle.",
    "Please remember to switch off the lamp when you leave the room at the end of the day.",
]
# (name, espeak-ng voice, words per minute, text index) per set
ESPEAK = {
    "tune": [("us_m_150", "en-us", 150, 0), ("us_f_200", "en-us+f3", 200, 1),
             ("gb_m_120", "en-gb+m3", 120, 1)],
    "heldout": [("rp_f_170", "en-gb-x-rp+f4", 170, 0), ("sc_m_140", "en-gb-scotland", 140, 1),
                ("us_m7_230", "en-us+m7", 230, 0), ("car_f_160", "en-029+f2", 160, 1)],
}
LEAD_S = 0.3  # silence put before each clip: the measure reads the rest pose there

_ANALYSE = """
import json, sys, time, wave
from pathlib import Path
from services.audio.engines import SpeechRequest
from services.audio.engines.recording import RecordingEngine, decode
from services.audio.engines.piper import PiperEngine
from shared.phonemes import to_dicts
jobs = json.loads(sys.argv[1])
rec = RecordingEngine(Path("models"))
rec.aligner.recognise(bytes(3200))  # every decoder loaded before the clocks start
rec.aligner.align(bytes(3200), "hello")
piper = None
for job in jobs:
    out = {}
    if job.get("piper_text"):
        piper = piper or PiperEngine(Path("models"))
        speech = piper.synthesize(SpeechRequest(job["piper_text"], Path(job["wav"])))
        out["text"] = {"phonemes": to_dicts(speech.phonemes), "gain": 1.0}
    flac = Path(job["wav"]).with_suffix(".flac")
    import subprocess
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", job["wav"], "-ac", "1", "-ar", "48000",
                    flac], check=True)
    for mode, text, language in (("aligned", job["text"], "en"), ("recognised", "", "en"),
                                 ("sound", "", "xx")):
        t = time.perf_counter()
        s = rec.synthesize(SpeechRequest(text, Path(job["wav"] + "." + mode + ".wav"),
                                         recording=flac, language=language))
        took = time.perf_counter() - t
        Path(job["wav"] + "." + mode + ".wav").unlink()
        out[mode] = {"phonemes": to_dicts(s.phonemes), "gain": s.info["level_gain"],
                     "mode": s.info["mouth"], "why": s.info["mouth_reason"],
                     "seconds": took, "duration": s.duration}
    Path(job["wav"]).with_suffix(".analysis.json").write_text(json.dumps(out))
"""


def recordings(out: Path, which: str) -> list[dict]:
    """The set's recordings (made once, cached in `out`), each with its transcript."""
    out.mkdir(parents=True, exist_ok=True)
    items = []
    if which == "tune":
        items.append({"name": "lj_real", "wav": str(out / "lj_real.wav"), "text": LJ_TEXT})
        if not (out / "lj_real.wav").is_file():
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(LJ), str(out / "lj_real.wav")],
                           check=True)
        items.append({"name": "piper_fed_back", "wav": str(out / "piper.wav"),
                      "text": TUNE_TEXTS[0], "piper_text": TUNE_TEXTS[0]})
    else:
        items.append({"name": "arctic_real", "wav": str(out / "arctic_real.wav"),
                      "text": ARCTIC_TEXT})
        if not (out / "arctic_real.wav").is_file():
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(ARCTIC),
                            str(out / "arctic_real.wav")], check=True)
    texts = TUNE_TEXTS if which == "tune" else HELDOUT_TEXTS
    for name, voice, wpm, k in ESPEAK[which]:
        wav = out / f"{name}.wav"
        if not wav.is_file():
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), texts[k]],
                           check=True)
        items.append({"name": name, "wav": str(wav), "text": texts[k]})
    todo = [i for i in items if not Path(i["wav"]).with_suffix(".analysis.json").is_file()]
    if todo:
        subprocess.run([str(ROOT / ".venvs/audio/bin/python"), "-c", _ANALYSE, json.dumps(todo)],
                       cwd=ROOT, check=True)
    for item in items:
        item["analysis"] = json.loads(Path(item["wav"]).with_suffix(".analysis.json").read_text())
    return items


def _read(wav: str) -> tuple[np.ndarray, int]:
    with wave.open(wav, "rb") as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return audio, rate


def _shift(phonemes: list[dict] | None, by: float, end: float) -> list[dict] | None:
    if phonemes is None:
        return None
    out = [{"phoneme": "_", "start": 0.0, "end": by}]
    out += [{**p, "start": p["start"] + by, "end": p["end"] + by} for p in phonemes]
    out.append({"phoneme": "_", "start": out[-1]["end"], "end": end})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out/recordings")
    parser.add_argument("--set", choices=["tune", "heldout", "both"], default="both")
    args = parser.parse_args()
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                           max_num_faces=1, min_detection_confidence=0.5)
    engine = PortraitEngine()
    image = cv2.cvtColor(cv2.imread(str(ROOT / "tests/data/portrait.png")), cv2.COLOR_BGR2RGB)
    with FaceAnalyzer() as analyzer:
        face = analyzer.analyze(image)[0]
    report: dict = {"fps": q.FPS, "size": q.SIZE, "sets": {}}
    sets = ["tune", "heldout"] if args.set == "both" else [args.set]
    for which in sets:
        items = recordings(args.out / which, which)
        by_mode: dict[str, list[dict]] = {}
        cost = []
        for item in items:
            audio, rate = _read(item["wav"])
            lead = np.zeros(int(LEAD_S * rate), np.float32)
            tail = np.zeros(int(q.TAIL_S * rate), np.float32)
            padded = np.concatenate([lead, audio, tail])
            end = len(padded) / rate
            # p/b/m times: the transcript's alignment, else the recognised phones, else none
            found = [got["phonemes"] for mode, got in item["analysis"].items()
                     if mode in ("aligned", "recognised") and got["phonemes"]]
            reference = _shift(found[0], LEAD_S, end) if found else [
                {"phoneme": "_", "start": end - q.TAIL_S, "end": end}]
            for mode, got in item["analysis"].items():
                if mode != "text":
                    cost.append(got["seconds"] / got["duration"])
                phonemes = _shift(got["phonemes"], LEAD_S, end)
                video = args.out / which / f"{item['name']}_{mode}.mp4"
                anim = q.render(engine, image, face, (padded * got["gain"], rate, phonemes),
                                video)
                m = q.measure(video, mesh, anim)
                clip = {"anim": anim, "lm": m["lm"], "ssim": m["ssim"],
                        "ssim0": m["ssim_first_vs_portrait"], "phonemes": reference,
                        "f": q.features(m["lm"]), "rms": q.frame_rms(padded, rate, anim.n_frames),
                        "video": video, "name": item["name"], "why": got.get("why"),
                        "ran": got.get("mode", mode)}
                by_mode.setdefault(mode, []).append(clip)
        figures = {}
        for mode, clips in by_mode.items():
            fig, _ = q.summarize(mode, clips)
            per_clip = {c["name"]: round(q.summarize(mode, [c])[0]["lipsync_r_lag0"], 3)
                        for c in clips}
            figures[mode] = {k: fig[k] for k in (
                "lipsync_r_lag0", "lipsync_best_lag", "lipsync_r_best", "bilabial_closed_pct",
                "n_bilabial", "opening_speech", "opening_silence", "vowel_open_pct")}
            figures[mode]["r_lag0_by_clip"] = per_clip
            figures[mode]["ran"] = {c["name"]: c["ran"] for c in clips}
            print(f"{which} {mode}: {json.dumps(figures[mode])}", flush=True)
        report["sets"][which] = {
            "clips": {i["name"]: {"seconds": round(len(_read(i["wav"])[0]) / _read(i["wav"])[1],
                                                   2),
                                  "text": i["text"]} for i in items},
            "modes": figures,
            "analysis_cost_x_realtime": {"median": round(float(np.median(cost)), 4),
                                         "max": round(float(np.max(cost)), 4)},
        }
        cost_x = report["sets"][which]["analysis_cost_x_realtime"]
        print(f"{which} analysis cost x real time: {cost_x}")
    mesh.close()
    report["measured_at"] = time.strftime("%Y-%m-%d")
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
