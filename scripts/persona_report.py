"""`python scripts/persona_report.py` (visual venv): the persona's figures, measured from the
outside with the mediapipe face mesh on decoded MP4 frames.

For each emotion it renders the same real Piper speech onto tests/data/portrait.png through the
visual stage's own render loop (as scripts/quality_report.py does), decodes the MP4 and measures,
against `neutral`: the mouth-corner lift, the eye aperture and the brow height (in % of the eye
distance, medians over the clip), lip-sync r (mouth opening against loudness), identity (dlib's
face recognition descriptors of every tenth frame against the photo's, scripts/face_identity.py)
and the SSIM of the aligned face against the first frame. Then the largest landmark step between
two frames while an emotion blends in (live motion), and the gaze in idle and listening (iris
position over 60 s of live motion). Writes out/persona/report.json and report.md; the voice
figures come from the audio venv (scripts/persona_voice.py). A benchmark: it prints figures, it
does not fail on them (tests/services/visual/test_expression.py checks them with margins).
`--emotions neutral happy --faces-only` renders fewer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
R_EYE, L_EYE = (33, 133), (263, 362)
CORNERS, NOSE_TIP = (61, 291), 1
LIDS = ((159, 145), (386, 374))
BROWS = (105, 66, 107, 334, 296, 336)
IRISES = (468, 473)


def eye_distance(lm: np.ndarray) -> float:
    return float(np.hypot(*(lm[list(L_EYE)].mean(axis=0) - lm[list(R_EYE)].mean(axis=0))))


def face_measures(lm: np.ndarray) -> dict[str, float]:
    """Of one face's 478 landmarks, in % of the eye distance: how high the mouth corners and
    the brows sit above the nose tip's level (+ is higher) and how open the eyes are."""
    d = eye_distance(lm) / 100.0
    nose_y = float(lm[NOSE_TIP, 1])
    return {
        "corner_height": float(nose_y - lm[list(CORNERS), 1].mean()) / d,
        "eye_aperture": float(np.mean([abs(lm[a, 1] - lm[b, 1]) for a, b in LIDS])) / d,
        "brow_height": float(nose_y - lm[list(BROWS), 1].mean()) / d,
    }


def gaze_of(lm: np.ndarray) -> np.ndarray:
    """The irises' mean offset from the eyes' centres, in % of the eye distance (x, y)."""
    d = eye_distance(lm) / 100.0
    centres = np.array([lm[list(R_EYE)].mean(axis=0), lm[list(L_EYE)].mean(axis=0)])
    out: np.ndarray = (lm[list(IRISES)] - centres).mean(axis=0) / d
    return out


def _blink_free(lm: np.ndarray) -> np.ndarray:
    """Frames whose eyes are open (a blink would pull the aperture down)."""
    d = np.linalg.norm(lm[:, 263] - lm[:, 33], axis=1)
    ear = np.mean([np.abs(lm[:, a, 1] - lm[:, b, 1]) for a, b in LIDS], axis=0) / d
    out: np.ndarray = ear > 0.8 * np.nanmedian(ear)
    return out


def emotion_rows(out: Path, mesh, analyzer, image: np.ndarray,  # type: ignore[no-untyped-def]
                 emotions: tuple[str, ...]) -> dict[str, dict]:
    """Per emotion, over real speech clips rendered by the visual stage's loop and decoded."""
    import quality_report as q
    from bench_clip import render_clip
    from face_identity import IdentityJudge, clip_identity

    from services.visual.engines.base import RenderSpec
    from services.visual.engines.portrait import PortraitEngine

    face = analyzer.analyze(image)[0]
    clips = q.speech(out)[:2]
    engine = PortraitEngine()
    judge = IdentityJudge()
    reference = judge.of_landmarks(image, _mesh(mesh, image))
    rows: dict[str, dict] = {}
    for emotion in emotions:
        measures, opens, rmss, ssim, ssim0, ident = [], [], [], [], [], []
        for k, (audio, rate, phonemes) in enumerate(clips):
            video = out / f"{emotion}_{k}.mp4"
            spec = RenderSpec(fps=q.FPS, size=q.SIZE, emotion=emotion, intensity=1.0)
            _, anim = render_clip(engine, image, face, audio, rate, phonemes, spec, video,
                                  lanes=2)
            m = q.measure(video, mesh, anim)
            lm = m["lm"]
            ok = np.isfinite(lm[:, 0, 0]) & _blink_free(lm)
            measures += [face_measures(x) for x in lm[ok]]
            opens.append(q.features(lm)["opening"])
            rmss.append(q.frame_rms(audio, rate, len(lm)))
            blinks = np.convolve(anim.tracks.blink > 0.01, np.ones(5), "same") > 0
            ssim.append(m["ssim"][~blinks])  # as quality_report: a blink is no change of face
            ssim0.append(m["ssim_first_vs_portrait"])
            ident.append(clip_identity(judge, q.decode(video), lm, reference))
        same = np.concatenate(ident)
        rows[emotion] = {
            **{key: round(float(np.median([x[key] for x in measures])), 2)
               for key in measures[0]},
            "lipsync_r_lag0": round(q._lagged(opens, rmss, 0), 3),
            "lipsync_r_best": round(max(q._lagged(opens, rmss, lag) for lag in q.LAGS), 3),
            "ssim_vs_first_mean": round(float(np.nanmean(np.concatenate(ssim))), 4),
            "ssim_first_vs_portrait": round(float(np.mean(ssim0)), 4),
            "identity_median": round(float(np.median(same[:, 0])), 4),
            "identity_p5": round(float(np.percentile(same[:, 0], 5)), 4),
            "identity_distance_max": round(float(np.max(same[:, 1])), 3),
        }
    return rows


def jumps(mesh, anim) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The largest landmark step between two frames (% of the eye distance) in 4 s of live
    motion, speaking, with the emotion changing each second, and in the same 4 s without."""
    from services.visual.persona_motion import PersonaMotion
    from shared.persona import Feeling

    out = {}
    for name, changes in (("with changes", {25: "happy", 50: "sad", 75: "surprised"}),
                          ("no change", {})):
        persona = PersonaMotion(seed=5)
        lms = []
        for i in range(100):
            t = i / 25
            if i in changes:
                persona.feel(Feeling(changes[i], 1.0), t)
            look, _ = persona.at(t, speaking=True)
            lms.append(_mesh(mesh, anim.draw(0, 0, 0, 0, 0, 0, 0, look=look)))
        lm = np.array(lms)
        d = eye_distance(lm[0]) / 100
        steps = np.linalg.norm(np.diff(lm[:, :468], axis=0), axis=2).max(axis=1) / d
        out[name] = round(float(np.nanmax(steps)), 2)
    return out


def gaze_rows(mesh, anim) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """Gaze in idle and listening over 60 s of live motion: saccades a minute and eye contact
    (the model's), and the irises as the face mesh sees them on 20 s of drawn frames."""
    from services.visual.persona_motion import PersonaMotion

    rows = {}
    for state in ("idle", "listening", "thinking"):
        persona = PersonaMotion(seed=11)
        persona.state = state
        looks = [persona.at(i / 25, speaking=False)[0] for i in range(60 * 25)]
        gaze = np.array([lk.gaze for lk in looks])
        moves = np.linalg.norm(np.diff(gaze, axis=0), axis=1) > 0.02
        seen = np.array([gaze_of(_mesh(mesh, anim.draw(0, 0, 0, 0, 0, 0, 0, look=lk)))
                         for lk in looks[:500:5]])
        rows[state] = {
            "saccades_per_min": int(np.count_nonzero(moves[1:] & ~moves[:-1])),
            "eye_contact_pct": round(100 * float(np.mean(np.hypot(*gaze.T) < 0.25)), 1),
            "iris_sd_x_pct": round(float(np.nanstd(seen[:, 0])), 2),
            "iris_sd_y_pct": round(float(np.nanstd(seen[:, 1])), 2),
        }
    return rows


def _mesh(mesh, image: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    res = mesh.process(image)
    if not res.multi_face_landmarks:
        return np.full((478, 2), np.nan)
    h, w = image.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark])


def markdown(figures: dict) -> str:
    rows = figures["emotions"]
    base = rows["neutral"]
    out = ["| emotion | mouth corners | eye aperture | brows | lip-sync r (lag 0 / best) | "
           "identity vs photo (median / 5th pct; largest distance) | SSIM vs first (mean) | "
           "SSIM first vs portrait |",
           "|---" * 8 + "|"]
    for emotion, r in rows.items():
        out.append(
            f"| {emotion} | {r['corner_height'] - base['corner_height']:+.1f} | "
            f"{r['eye_aperture'] - base['eye_aperture']:+.1f} | "
            f"{r['brow_height'] - base['brow_height']:+.1f} | "
            f"{r['lipsync_r_lag0']} / {r['lipsync_r_best']} | "
            f"{r['identity_median']} / {r['identity_p5']}; {r['identity_distance_max']} | "
            f"{r['ssim_vs_first_mean']} | "
            f"{r['ssim_first_vs_portrait']} |")
    if "jumps" not in figures:
        return "\n".join(out) + "\n"
    out += ["", f"Largest landmark step between two frames: {figures['jumps']}", "",
            "| state | saccades/min | eye contact % | iris SD x / y (% eye distance) |",
            "|---|---|---|---|"]
    for state, g in figures["gaze"].items():
        out.append(f"| {state} | {g['saccades_per_min']} | {g['eye_contact_pct']} | "
                   f"{g['iris_sd_x_pct']} / {g['iris_sd_y_pct']} |")
    return "\n".join(out) + "\n"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    from shared.persona import EMOTIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emotions", nargs="*", default=list(EMOTIONS),
                        help="emotions to render (neutral first: the others are against it)")
    parser.add_argument("--faces-only", action="store_true", help="skip the live figures")
    args = parser.parse_args()
    import cv2
    import mediapipe as mp

    from services.visual.engines.base import RenderSpec
    from services.visual.engines.portrait import PortraitEngine
    from services.visual.face import FaceAnalyzer

    out = ROOT / "out" / "persona"
    out.mkdir(parents=True, exist_ok=True)
    image = cv2.cvtColor(cv2.imread(str(ROOT / "tests/data/portrait.png")), cv2.COLOR_BGR2RGB)
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                           max_num_faces=1)
    with FaceAnalyzer() as analyzer:
        figures: dict = {"emotions": emotion_rows(out, mesh, analyzer, image,
                                                  tuple(args.emotions))}
        face = analyzer.analyze(image)[0]
    if args.faces_only:
        print(markdown(figures))  # noqa: T201
        return 0
    anim = PortraitEngine().prepare(image, face, np.zeros(16000, np.float32), 16000, None,
                                    RenderSpec(fps=25, size=512))
    figures["jumps"] = jumps(mesh, anim)
    figures["gaze"] = gaze_rows(mesh, anim)
    (out / "report.json").write_text(json.dumps(figures, indent=1))
    (out / "report.md").write_text(markdown(figures))
    print(markdown(figures))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
