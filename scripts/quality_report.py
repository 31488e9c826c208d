"""`make quality`: how good the default `portrait` renderer's videos look, measured on the MP4s.

Renders real Piper speech onto tests/data/portrait.png and five variants of it (a small face in
a big wide canvas, greyscale, rotated 15 degrees, and a crop around the face rolled 30 degrees
or turned 30 degrees away, tests/services/visual/turned.py) through the real engine and the
visual stage's own render loop (scripts/bench_clip.py), decodes each MP4 with ffmpeg and runs
the mediapipe face mesh on every decoded frame. From those landmarks alone it measures lip sync
(mouth opening vs loudness, and the lag that fits best), closure in silence and on p/b/m (above
the rest pose, and absolute: the inner-lip gap under a third of the vowels', which a photo
smiling with its teeth must leave to pass), the near-black share of the lip area in the most
open frames, lip rounding, blink rate, identity (dlib's face recognition descriptors of every
tenth frame against the photo's, scripts/face_identity.py; and the SSIM of the aligned face
outside the mouth against the first frame) and jitter in still stretches. Besides the variants
it renders the closed-mouth and small-face portraits and the held-out one (tests/data; made by
scripts/make_test_portraits.py). The lips on p/b/m are judged twice: on the frames of Piper's
own phoneme timings, and from the outside, on the frames of the p/b/m and vowels PocketSphinx's
phone recogniser hears on each MP4's audio (the speech muxed in as the compositor does;
services/audio/hear.py in .venvs/audio), with how well the two agree. Writes
out/quality/report.json, report.md and contact_sheet.png. Run with .venvs/visual/bin/python;
speech comes from .venvs/audio (cached).
A benchmark, not a test: it prints figures and flags, it does not fail on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_clip import render_clip  # noqa: E402
from face_identity import IdentityJudge, clip_identity  # noqa: E402

from services.visual.engines.base import RenderSpec  # noqa: E402
from services.visual.engines.portrait import PortraitEngine  # noqa: E402
from services.visual.face import FaceAnalyzer  # noqa: E402
from services.visual.mask import read_frames  # noqa: E402
from services.visual.progressive import usable_cpus  # noqa: E402
from shared.ffmpeg import ffmpeg  # noqa: E402
from tests.services.visual.turned import turned  # noqa: E402

TEXTS = [
    "Peter Piper picked a peck of pickled peppers. Bob brought many bright blue balloons to the "
    "big parade, and Mum made pumpkin pie for everybody on the membership committee.",
    "Would you like to go for a walk down to the old boat house? Who knew the moon could look so "
    "blue over the cool, smooth water, or that you and Ruth would both be there too.",
    "Good morning, and welcome. This short message was generated on this machine, from one "
    "photograph and a few lines of text, without sending anything to the cloud. Please remember "
    "to breathe, relax, and smile. Maybe next time we can meet in person, but until then, "
    "thank you very much for watching, and have a wonderful afternoon.",
]
TAIL_S = 2.0  # silence appended to every clip: the head comes to rest, giving still stretches
FPS, SIZE = 25, 512
LAGS = range(-5, 6)
STABLE = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 263, 362, 70, 300, 105, 334, 234,
          454, 127, 356, 107, 336, 46, 276]  # forehead, brows, nose, eye corners, temples
LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
BILABIAL, ROUND, SPREAD = set("pbm"), ("u", "oʊ", "w", "ɔ", "ʊ"), ("i", "ɪ", "e", "eɪ")
SHUT = 0.02  # inner-lip gap within this (x inter-ocular distance) of the rest pose: closed
NEAR_BLACK = 35  # a pixel with every channel under this is near-black
OPEN_SHARE = 0.1  # the near-black share is measured on this share of most open frames
VOWELS = set("aæɑɐɒɔəɜʌɛeiɪoʊuɚɝ")
# phones heard on the MP4's audio (services/audio/hear.py, CMU symbols)
HEARD_BILABIAL = {"M", "B", "P"}
HEARD_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH",
                "UW"}
AGREE_S = 0.06  # a heard p/b/m agrees with Piper's when their centres are this close

_SPEAK = """
import json, sys
from pathlib import Path
from services.audio.engines import SpeechRequest
from services.audio.engines.piper import PiperEngine
from shared.phonemes import to_dicts
engine = PiperEngine(Path(sys.argv[1]))
for text, wav in json.loads(sys.argv[2]):
    speech = engine.synthesize(SpeechRequest(text, Path(wav)))
    Path(wav).with_suffix(".json").write_text(json.dumps(to_dicts(speech.phonemes)))
"""


def speech(out: Path) -> list[tuple[np.ndarray, int, list[dict]]]:
    """(audio, rate, phonemes) per text, synthesized once by Piper in the audio venv."""
    todo, paths = [], []
    for text in TEXTS:
        wav = out / "speech" / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.wav"
        paths.append(wav)
        if not wav.with_suffix(".json").is_file():
            todo.append((text, str(wav)))
    if todo:
        (out / "speech").mkdir(parents=True, exist_ok=True)
        subprocess.run([str(ROOT / ".venvs/audio/bin/python"), "-c", _SPEAK, str(ROOT / "models"),
                        json.dumps(todo)], cwd=ROOT, check=True)
    clips = []
    for wav in paths:
        with wave.open(str(wav), "rb") as w:
            rate = w.getframerate()
            audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        phonemes = json.loads(wav.with_suffix(".json").read_text())
        end = len(audio) / rate
        audio = np.concatenate([audio, np.zeros(int(TAIL_S * rate), np.float32)])
        phonemes.append({"phoneme": "_", "start": end, "end": len(audio) / rate})
        clips.append((audio, rate, phonemes))
    return clips


def portraits(analyzer: FaceAnalyzer) -> dict[str, np.ndarray]:
    base = cv2.cvtColor(cv2.imread(str(ROOT / "tests/data/portrait.png")), cv2.COLOR_BGR2RGB)
    box = analyzer.analyze(base)[0].box
    h, w = base.shape[:2]
    canvas = np.full((1080, 1920, 3), base[5, 5], np.uint8)
    canvas = cv2.GaussianBlur(canvas + np.random.default_rng(0).integers(0, 20, canvas.shape,
                                                                           np.uint8), (0, 0), 4)
    small = cv2.resize(base, (w * 2 // 5, h * 2 // 5), interpolation=cv2.INTER_AREA)
    canvas[600:600 + small.shape[0], 1300:1300 + small.shape[1]] = small
    grey = cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0)
    rotated = cv2.warpAffine(base, turn, (w, h), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT)
    read = lambda name: cv2.cvtColor(cv2.imread(str(ROOT / "tests/data" / name)),  # noqa: E731
                                     cv2.COLOR_BGR2RGB)
    return {"original": base, "small_face_wide": canvas, "greyscale": grey, "rotated_15": rotated,
            "roll_30": turned(base, box, "roll", 30), "yaw_30": turned(base, box, "yaw", 30),
            "closed_mouth": read("portrait_closed.png"), "small_face": read("portrait_small.png"),
            "holdout": read("holdout_dim.png")}


def near_black_share(frame: np.ndarray, lm: np.ndarray) -> float:
    """Share of the lip area (the outer-lip polygon, interior included) that is near-black."""
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[LIPS]).astype(np.int32)], 1)
    inside = mask.astype(bool)
    if not inside.any():
        return float("nan")
    return float(np.mean((frame[inside] < NEAR_BLACK).all(axis=1)))


def render(engine, image, face, clip, video: Path):
    """The clip rendered into `video` as the visual stage renders it; its animation."""
    audio, rate, phonemes = clip
    _, anim = render_clip(engine, image, face, audio, rate, phonemes,
                          RenderSpec(fps=FPS, size=SIZE), video, lanes=usable_cpus())
    return anim


def with_sound(video: Path, clip) -> None:
    """Mux the clip's speech into the rendered `video` as the compositor does (AAC 128 kb/s,
    48 kHz), so the MP4 carries the audio its lips are judged against."""
    audio, rate, _ = clip
    wav, muxed = video.with_suffix(".speech.wav"), video.with_suffix(".muxing.mp4")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    try:
        ffmpeg(["-i", str(video), "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                "-c:a", "aac", "-b:a", "128k", "-ar", "48000", str(muxed)],
               f"muxing speech into {video.name}", muxed)
    finally:
        wav.unlink(missing_ok=True)
    os.replace(muxed, video)


def heard(videos: list[Path]) -> list[list[dict]]:
    """The phones PocketSphinx's phone recogniser hears on each MP4's audio (CMU symbols;
    services/audio/hear.py, run in .venvs/audio), as phoneme dicts."""
    done = subprocess.run([str(ROOT / ".venvs/audio/bin/python"), "-m", "services.audio.hear",
                           *map(str, videos)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"recognising phones on {videos[0].name}...: {done.stderr.strip()}")
    got = json.loads(done.stdout)
    return [[{"phoneme": p["phone"], "start": p["start"], "end": p["end"]} for p in got[str(v)]]
            for v in videos]


def decode(video: Path):
    """Yield the MP4's frames as RGB arrays, in order."""
    yield from read_frames(video, SIZE, SIZE)


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))


def _face_mask(lm: np.ndarray) -> np.ndarray:
    """The face hull minus the whole lower face the jaw warp can move (nose base down)."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(lm.astype(np.int32)), 1)
    mw = np.linalg.norm(lm[291] - lm[61])
    cx = (lm[61, 0] + lm[291, 0]) / 2
    x0, x1 = int(cx - 1.0 * mw), int(cx + 1.0 * mw)
    mask[int(lm[2, 1]):, max(0, x0):x1] = 0
    return mask.astype(bool)


def measure(video: Path, mesh, anim) -> dict:
    """Landmark tracks and identity figures of one decoded MP4."""
    n, lms, ssim, first, ref_lm, mask, ref_grey = anim.n_frames, [], [], None, None, None, None
    dark: list[float] = []
    for i, frame in enumerate(decode(video)):
        res = mesh.process(frame)
        if not res.multi_face_landmarks:
            lms.append(np.full((478, 2), np.nan))
            ssim.append(np.nan)
            dark.append(np.nan)
            continue
        lm = np.array([(p.x, p.y) for p in res.multi_face_landmarks[0].landmark]) * SIZE
        lms.append(lm)
        dark.append(near_black_share(frame, lm))
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if first is None:
            first, ref_lm, mask, ref_grey = i, lm, _face_mask(lm), grey
            base = np.asarray(anim._base)  # the framed portrait: the renderer's rest pose
            base_lm = np.array([(p.x, p.y) for p in mesh.process(base).multi_face_landmarks[0]
                                .landmark]) * SIZE
            m, _ = cv2.estimateAffinePartial2D(lm[STABLE], base_lm[STABLE], method=cv2.LMEDS)
            aligned = cv2.warpAffine(grey, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE)
            base = cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)
            vs_portrait = float(_ssim_map(aligned, base)[_face_mask(base_lm)].mean())
        m, _ = cv2.estimateAffinePartial2D(lm[STABLE], ref_lm[STABLE], method=cv2.LMEDS)
        aligned = cv2.warpAffine(grey, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        ssim.append(float(_ssim_map(aligned, ref_grey)[mask].mean()))
    lms = np.array(lms)
    if len(lms) != n:
        raise SystemExit(f"{video} decoded to {len(lms)} frames, expected {n}")
    return {"lm": lms, "ssim": np.array(ssim), "ssim_first_vs_portrait": vs_portrait,
            "near_black": np.array(dark)}


def frame_rms(audio: np.ndarray, rate: int, n: int) -> np.ndarray:
    edges = np.round(np.arange(n + 1) * rate / FPS).astype(int)
    return np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a else 0.0
                     for a, b in zip(edges[:-1], edges[1:], strict=True)])


def features(lm: np.ndarray) -> dict[str, np.ndarray]:
    dist = lambda a, b: np.linalg.norm(lm[:, a] - lm[:, b], axis=1)  # noqa: E731
    iod = dist(33, 263)
    ear = (dist(159, 145) / dist(33, 133) + dist(386, 374) / dist(263, 362)) / 2
    return {"opening": dist(13, 14) / iod, "width": dist(61, 291) / iod, "ear": ear, "iod": iod}


def _lagged(xs: list[np.ndarray], ys: list[np.ndarray], lag: int) -> float:
    """Pearson r of x[t + lag] against y[t], pooled over clips (lag > 0: x comes later)."""
    px, py = [], []
    for x, y in zip(xs, ys, strict=True):
        if lag >= 0:
            px.append(x[lag:]), py.append(y[:len(y) - lag])
        else:
            px.append(x[:lag]), py.append(y[-lag:])
    x, y = np.concatenate(px), np.concatenate(py)
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def _phoneme_frames(phonemes: list[dict], n: int, pick) -> list[np.ndarray]:
    """For each phoneme that `pick` accepts: the frames whose centres fall inside it."""
    out = []
    for p in phonemes:
        if pick(p["phoneme"]):
            a, b = p["start"] * FPS - 0.5, p["end"] * FPS - 0.5
            frames = np.arange(int(np.ceil(a)), int(np.floor(b)) + 1)
            if not len(frames):
                frames = np.array([int(round((a + b) / 2))])
            out.append(frames[(frames >= 0) & (frames < n)])
    return [f for f in out if len(f)]


def _centres(phonemes: list[dict], pick) -> np.ndarray:
    return np.array([(p["start"] + p["end"]) / 2 for p in phonemes if pick(p["phoneme"])])


def _nearest(times: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each of `times`, the signed distance to the nearest of `others` (inf if none)."""
    if not len(others):
        return np.full(len(times), np.inf)
    d = others[None, :] - times[:, None]
    return d[np.arange(len(times)), np.abs(d).argmin(axis=1)]


def heard_figures(clips: list[dict]) -> dict:
    """Lips meet on the p/b/m heard on the MP4s' audio (inner-lip gap under a third of the
    heard vowels'), and how well the heard p/b/m agree with Piper's timings."""
    bil_gap, vow_max, recall, precision = [], [], [], []
    is_bilabial, is_vowel = HEARD_BILABIAL.__contains__, HEARD_VOWELS.__contains__
    for c in clips:
        g, ears = c["f"]["opening"], c["heard"]
        bil_gap += [np.nanmin(g[f]) for f in _phoneme_frames(ears, len(g), is_bilabial)]
        vow_max += [np.nanmax(g[f]) for f in _phoneme_frames(ears, len(g), is_vowel)]
        piper = _centres(c["phonemes"], lambda s: s[0] in BILABIAL)
        said = _centres(ears, is_bilabial)
        recall.append(_nearest(piper, said))
        precision.append(_nearest(said, piper))
    vow_gap = float(np.nanmean(vow_max))
    recall_d, precision_d = np.concatenate(recall), np.concatenate(precision)
    matched = recall_d[np.abs(recall_d) <= AGREE_S]
    return {
        "n_bilabial_heard": len(bil_gap), "n_vowel_heard": len(vow_max),
        "gap_bilabial_heard": round(float(np.nanmean(bil_gap)), 4),
        "gap_vowel_heard": round(vow_gap, 4),
        "bilabial_meet_pct_heard": round(100 * float(np.mean(np.array(bil_gap) < vow_gap / 3)), 1),
        "piper_bilabials_heard_pct": round(100 * float(np.mean(np.abs(recall_d) <= AGREE_S)), 1),
        "heard_bilabials_piper_pct": round(100 * float(np.mean(np.abs(precision_d) <= AGREE_S)),
                                           1),
        "heard_offset_ms_median": round(1000 * float(np.median(matched)), 1) if len(matched)
        else None,
    }


def _drawn(anim) -> np.ndarray:
    """The opening each frame draws (parted lips relaxed for speech included), or the track's
    where the renderer has no such notion (an older revision, for a before/after run)."""
    if not hasattr(anim, "drawn_opening"):
        return anim.tracks.opening.astype(float)
    return np.array([anim.drawn_opening(i) for i in range(anim.n_frames)])


def summarize(name: str, clips: list[dict]) -> tuple[dict, dict]:
    """The figures of one portrait over all its clips, and the frames for its contact sheet."""
    opens = [c["f"]["opening"] for c in clips]
    rmss = [c["rms"] for c in clips]
    intended = [_drawn(c["anim"]) for c in clips]
    r = {lag: _lagged(opens, rmss, lag) for lag in LAGS}
    r_track = {lag: _lagged(opens, intended, lag) for lag in LAGS}
    r_design = {lag: _lagged(intended, rmss, lag) for lag in LAGS}
    best = max(r, key=r.get)
    rest = np.nanmedian(np.concatenate([o[:3] for o in opens]))  # the 0.15 s lead-in is silent
    above = [o - rest for o in opens]
    cat = lambda xs: np.concatenate(xs)  # noqa: E731
    silent = cat([c["rms"] < 0.005 for c in clips])
    speaking = cat([c["rms"] > 0.05 for c in clips])
    op = cat(above)
    bil = [np.nanmin(a[f]) for a, c in zip(above, clips, strict=True)
           for f in _phoneme_frames(c["phonemes"], len(a), lambda s: s[0] in BILABIAL)]
    vow = [np.nanmax(a[f]) for a, c in zip(above, clips, strict=True)
           for f in _phoneme_frames(c["phonemes"], len(a), lambda s: s[0] in VOWELS)]
    gaps = [c["f"]["opening"] for c in clips]  # absolute, not above the rest pose
    bil_gap = [np.nanmin(g[f]) for g, c in zip(gaps, clips, strict=True)
               for f in _phoneme_frames(c["phonemes"], len(g), lambda s: s[0] in BILABIAL)]
    vow_gap = float(np.nanmean([np.nanmax(g[f]) for g, c in zip(gaps, clips, strict=True)
                                for f in _phoneme_frames(c["phonemes"], len(g),
                                                         lambda s: s[0] in VOWELS)]))
    dark = cat([c["near_black"] for c in clips])
    most_open = op >= np.nanquantile(op, 1.0 - OPEN_SHARE)
    widths = [c["f"]["width"] for c in clips]
    rnd = [np.nanmin(w[f]) for w, c in zip(widths, clips, strict=True)
           for f in _phoneme_frames(c["phonemes"], len(w), lambda s: s.startswith(ROUND))]
    spr = [np.nanmax(w[f]) for w, c in zip(widths, clips, strict=True)
           for f in _phoneme_frames(c["phonemes"], len(w), lambda s: s.startswith(SPREAD))]
    rest_width = np.nanmedian(np.concatenate([w[:3] for w in widths]))

    blinks, planned, seconds, jitter, ssim_open = 0, 0, 0.0, [], []
    for c in clips:
        ear = c["f"]["ear"]
        shut = ear < 0.6 * np.nanmedian(ear)
        merged = _runs(shut)
        blinks += sum(1 for k, s in enumerate(merged) if k == 0 or s[0] - merged[k - 1][1] > 1)
        closed = c["anim"].tracks.blink > 0.5
        planned += int(np.count_nonzero(closed[1:] & ~closed[:-1]) + closed[0])
        seconds += len(ear) / FPS
        near_blink = np.convolve(shut | (c["anim"].tracks.blink > 0.01), np.ones(5), "same") > 0
        speech_end = c["phonemes"][-1]["start"]
        still = np.zeros(len(ear), bool)
        still[int((speech_end + 0.8) * FPS):] = True  # motion is exactly 0 after ~0.6 s silence
        still &= ~near_blink
        motion = np.linalg.norm(np.diff(c["lm"], axis=0), axis=2).mean(axis=1)
        jitter.append(motion[still[1:] & still[:-1]])
        ssim_open.append(c["ssim"][~near_blink])
    jitter_px, ssim_all = cat(jitter), cat([c["ssim"] for c in clips])
    fig = {
        "frames": int(sum(len(o) for o in opens)), "seconds": round(seconds, 2),
        "face_found_pct": round(100 * float(np.mean(np.isfinite(cat(opens)))), 2),
        "lipsync_r_lag0": round(r[0], 3), "lipsync_best_lag": int(best),
        "lipsync_r_best": round(r[best], 3),
        "lipsync_r_by_lag": {str(k): round(v, 3) for k, v in r.items()},
        "design_r_lag0": round(r_design[0], 3),
        "design_best_lag": int(max(r_design, key=r_design.get)),
        "track_vs_video_best_lag": int(max(r_track, key=r_track.get)),
        "track_vs_video_r": round(max(r_track.values()), 3),
        "rest_opening": round(float(rest), 4),
        "opening_silence": round(float(np.nanmean(op[silent])), 4),
        "opening_speech": round(float(np.nanmean(op[speaking])), 4),
        "opening_bilabial": round(float(np.nanmean(bil)), 4),
        "opening_vowel": round(float(np.nanmean(vow)), 4),
        "bilabial_closed_pct": round(100 * float(np.mean(np.array(bil) < SHUT)), 1),
        "vowel_open_pct": round(100 * float(np.mean(np.array(vow) > SHUT)), 1),
        "speech_below_rest_pct": round(100 * float(np.mean(op[speaking] < -SHUT)), 1),
        "n_bilabial": len(bil), "n_vowel": len(vow),
        "gap_bilabial": round(float(np.nanmean(bil_gap)), 4), "gap_vowel": round(vow_gap, 4),
        "bilabial_meet_pct": round(100 * float(np.mean(np.array(bil_gap) < vow_gap / 3)), 1),
        "near_black_open_pct": round(100 * float(np.nanmean(dark[most_open])), 2),
        "near_black_open_max_pct": round(100 * float(np.nanmax(dark[most_open])), 2),
        "width_rest": round(float(rest_width), 4),
        "width_rounded": round(float(np.nanmean(rnd)), 4),
        "width_spread": round(float(np.nanmean(spr)), 4),
        "blinks": blinks, "blinks_planned": planned,
        "blinks_per_min": round(60 * blinks / seconds, 1),
        "ssim_first_vs_portrait": round(float(np.mean([c["ssim0"] for c in clips])), 4),
        "ssim_vs_first_mean": round(float(np.nanmean(cat(ssim_open))), 4),
        "ssim_vs_first_min": round(float(np.nanmin(cat(ssim_open))), 4),
        "ssim_vs_first_min_incl_blinks": round(float(np.nanmin(ssim_all)), 4),
        "jitter_still_px_median": round(float(np.median(jitter_px)), 3),
        "jitter_still_px_p95": round(float(np.percentile(jitter_px, 95)), 3),
        "n_still_frames": len(jitter_px),
    }
    # contact-sheet picks (clip, frame): mid-speech p/b/m, widest open, a rounded vowel, a blink
    def argbest(scores: list[tuple[float, int, int]]) -> tuple[int, int]:
        return min(scores)[1:] if scores else (0, 0)
    closed_pick = argbest([(float(np.nanmin(above[k][f])), k, int(f[np.nanargmin(above[k][f])]))
                           for k, c in enumerate(clips)
                           for f in _phoneme_frames(c["phonemes"], len(above[k]),
                                                    lambda s: s[0] in BILABIAL) if f[0] > 10])
    open_pick = argbest([(-float(np.nanmax(o)), k, int(np.nanargmax(o)))
                         for k, o in enumerate(above)])
    round_pick = argbest([(float(np.nanmin(widths[k][f])), k, int(f[np.nanargmin(widths[k][f])]))
                          for k, c in enumerate(clips)
                          for f in _phoneme_frames(c["phonemes"], len(widths[k]),
                                                   lambda s: s.startswith(ROUND))])
    blink_pick = argbest([(float(np.nanmin(c["f"]["ear"])), k, int(np.nanargmin(c["f"]["ear"])))
                          for k, c in enumerate(clips)])
    picks = {"closed (p/b/m)": closed_pick, "open": open_pick, "rounded": round_pick,
             "blink": blink_pick}
    return fig, picks


def frames_at(video: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    return {i: f.copy() for i, f in enumerate(decode(video)) if i in wanted}


def contact_sheet(rows: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]],
                  path: Path) -> None:
    """One row per portrait: four frames at full size (closed on p/b/m, widest open, rounded,
    blink), then under each a 2x crop of its mouth (of the eyes for the blink), nothing scaled
    down: the mouth is seen as a viewer sees it."""
    cell = SIZE
    lines = []
    for name, frames, lms in rows:
        fulls, crops = [], []
        for label, frame in frames.items():
            img = frame.copy()
            cv2.putText(img, label, (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 0), 2)
            fulls.append(img)
            lm = lms[label]
            pts = lm[[33, 263]] if label == "blink" else lm[[61, 291, 13, 14]]
            c = pts.mean(axis=0)
            half = cell // 4
            x0, y0 = int(c[0]) - half, int(c[1]) - half
            crop = np.pad(frame, ((half, half), (half, half), (0, 0)), mode="edge")[
                y0 + half:y0 + 3 * half, x0 + half:x0 + 3 * half]
            crops.append(cv2.resize(crop, (cell, cell), interpolation=cv2.INTER_CUBIC))
        head = np.zeros((32, cell * 4, 3), np.uint8)
        cv2.putText(head, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        lines += [head, np.hstack(fulls), np.hstack(crops)]
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(lines), cv2.COLOR_RGB2BGR))


def identity_figures(clips: list[dict]) -> dict[str, float]:
    """Identity as dlib's face recognition model sees it (scripts/face_identity.py): cosine
    similarity of every tenth frame's face descriptor to the photo's, and the largest distance
    (dlib calls two faces one person under 0.6)."""
    both = np.concatenate([c["identity"] for c in clips])
    return {"identity_median": round(float(np.median(both[:, 0])), 4),
            "identity_p5": round(float(np.percentile(both[:, 0], 5)), 4),
            "identity_distance_max": round(float(np.max(both[:, 1])), 3)}


CELLS: dict[str, Any] = {  # report.md cells made of several figures
    "width": lambda f: f"{f['width_rest']:.3f} / {f['width_rounded']:.3f} / "
                       f"{f['width_spread']:.3f}",
    "blinks_seen": lambda f: f"{f['blinks']} / {f['blinks_planned']}",
    "gaps": lambda f: f"{f['gap_bilabial']:.3f} / {f['gap_vowel']:.3f}",
    "meet_heard": lambda f: f"{f['bilabial_meet_pct_heard']} ({f['n_bilabial_heard']})",
    "agree": lambda f: f"{f['piper_bilabials_heard_pct']} / {f['heard_bilabials_piper_pct']} "
                       f"({f['heard_offset_ms_median']})",
    "near_black": lambda f: f"{f['near_black_open_pct']} / {f['near_black_open_max_pct']}",
    "jitter": lambda f: f"{f['jitter_still_px_median']} / {f['jitter_still_px_p95']}",
    "identity": lambda f: f"{f['identity_median']} / {f['identity_p5']} "
                          f"({f['identity_distance_max']})",
}


def markdown(figures: dict[str, dict]) -> str:
    cols = [("lip-sync r (lag 0)", "lipsync_r_lag0"),
            ("renderer's own track r (lag 0; ceiling)", "design_r_lag0"),
            ("video vs renderer track r", "track_vs_video_r"),
            ("best lag (frames)", "lipsync_best_lag"),
            ("r at best lag", "lipsync_r_best"), ("opening: silence", "opening_silence"),
            ("opening: speech", "opening_speech"), ("opening: p/b/m", "opening_bilabial"),
            ("opening: vowels", "opening_vowel"), ("p/b/m closed %", "bilabial_closed_pct"),
            ("vowels open %", "vowel_open_pct"),
            ("p/b/m lips meet %, Piper's timings (gap < vowels' / 3)", "bilabial_meet_pct"),
            ("p/b/m lips meet %, phones heard on the MP4 (n p/b/m heard)", "meet_heard"),
            (f"Piper's p/b/m heard within {AGREE_S * 1000:.0f} ms % / heard p/b/m Piper's % "
             "(median offset ms)", "agree"),
            ("gap: p/b/m / vowels (absolute)", "gaps"),
            ("near-black % of lips, most open 10% (mean / max)", "near_black"),
            ("speech frames narrower than rest %", "speech_below_rest_pct"),
            ("mouth width: rest/rounded/spread", "width"), ("blinks/min", "blinks_per_min"),
            ("blinks seen/planned", "blinks_seen"),
            ("identity vs photo: median / 5th pct (largest distance)", "identity"),
            ("SSIM first vs portrait",
                                                     "ssim_first_vs_portrait"),
            ("SSIM vs first: mean", "ssim_vs_first_mean"), ("SSIM vs first: min",
                                                              "ssim_vs_first_min"),
            ("jitter in stills px (median/p95)", "jitter"), ("face found %", "face_found_pct")]
    names = list(figures)
    out = ["| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in cols:
        cells = []
        for n in names:
            f = figures[n]
            cells.append(CELLS[key](f) if key in CELLS else str(f[key]))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "Openings (inner lips 13-14) and widths (corners 61-291) are fractions of the "
            "inter-ocular distance (33-263); openings are measured above the rest pose's gap "
            f"(first frames); closed = within {SHUT} of rest. r: Pearson correlation of mouth "
            "opening with per-frame RMS; lag > 0: the mouth moves later than the sound."]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out/quality")
    parser.add_argument("--only", nargs="*", help="portrait names to run (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    clips = speech(args.out)
    print(f"speech: {', '.join(f'{len(a) / r:.1f} s' for a, r, _ in clips)} "
          f"(incl. {TAIL_S:.0f} s silent tails)")
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                           max_num_faces=1, min_detection_confidence=0.5)
    engine, figures, rows = PortraitEngine(), {}, []
    judge = IdentityJudge()
    with FaceAnalyzer() as analyzer:
        for name, image in portraits(analyzer).items():
            if args.only and name not in args.only:
                continue
            cv2.imwrite(str(args.out / f"portrait_{name}.png"),
                        cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            faces = analyzer.analyze(image)
            if not faces:
                figures[name] = {"error": "no face found in the portrait"}
                continue
            done, reference = [], judge.of_landmarks(image, faces[0].landmarks)
            for k, clip in enumerate(clips):
                video = args.out / f"{name}_{k}.mp4"
                anim = render(engine, image, faces[0], clip, video)
                with_sound(video, clip)
                m = measure(video, mesh, anim)
                done.append({"anim": anim, "lm": m["lm"], "ssim": m["ssim"],
                             "ssim0": m["ssim_first_vs_portrait"], "phonemes": clip[2],
                             "near_black": m["near_black"],
                             "f": features(m["lm"]), "rms": frame_rms(clip[0], clip[1],
                                                                      anim.n_frames),
                             "video": video,
                             "identity": clip_identity(judge, decode(video), m["lm"], reference)})
            for c, ears in zip(done, heard([c["video"] for c in done]), strict=True):
                c["heard"] = ears
            figures[name], picks = summarize(name, done)
            figures[name].update(heard_figures(done))
            figures[name].update(identity_figures(done))
            frames, lms = {}, {}
            for label, (k, i) in picks.items():
                frames[label] = frames_at(done[k]["video"], {i})[i]
                lms[label] = done[k]["lm"][i]
            rows.append((name, frames, lms))
            shown = {k: v for k, v in figures[name].items() if k != "lipsync_r_by_lag"}
            print(f"{name}: {json.dumps(shown)}", flush=True)
    mesh.close()
    (args.out / "report.json").write_text(json.dumps(
        {"fps": FPS, "size": SIZE, "texts": TEXTS, "tail_silence_s": TAIL_S,
         "seconds_total": round(time.monotonic() - started, 1), "portraits": figures}, indent=2))
    (args.out / "report.md").write_text(markdown({k: v for k, v in figures.items()
                                                  if "error" not in v}))
    contact_sheet(rows, args.out / "contact_sheet.png")
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
