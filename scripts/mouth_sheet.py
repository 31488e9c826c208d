"""Full-size frames of the `portrait` renderer's mouth shapes, to look at (not a benchmark).

For each test portrait (the smiling test photo, its grey-scale copy, the photo turned 30 degrees
away, the closed-mouth photo, a small face) it draws the mouth pressed shut (p/b/m), on a wide
vowel ("ah"), on l/t/d/n (tongue tip up), on o/u (rounded) and on th (tongue between the teeth)
with `Animation.draw`, and writes out/mouth/<portrait>_<size>.png (one row per renderer, full
frames side by side) and <portrait>_<size>_mouth.png (2x crops of the mouth). With
`--before REV` that git revision's whole services/visual is checked out into a temporary
worktree and drawn there in a subprocess: its row comes first. Also writes before_after.jpg, a
small sheet of the mouth crops of every portrait, for docs/. Run with .venvs/visual/bin/python.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
# name: (opening, lateral as a fraction of mouth width, tongue)
SHAPES = {"p/b/m": (-1.0, 0.0, 0.0), "wide vowel": (0.95, 0.06, 0.0),
          "l/t/d/n": (0.3, 0.02, 1.0), "o/u": (0.5, -0.09, 0.0), "th": (0.25, 0.03, 2.0)}
DATA = ROOT / "tests/data"


def portraits(analyzer) -> dict[str, np.ndarray]:
    """The sheet's portraits (RGB), all made from files in tests/data."""
    from tests.services.visual.turned import turned

    read = lambda p: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)  # noqa: E731
    photo = read(DATA / "portrait.png")
    box = analyzer.analyze(photo)[0].box
    grey = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return {"photo": photo, "greyscale": grey, "yaw_30": turned(photo, box, "yaw", 30),
            "closed": read(DATA / "portrait_closed.png"),
            "small": read(DATA / "portrait_small.png")}


def _draw(anim, opening: float, lateral: float, tongue: float) -> np.ndarray:
    lateral_px = lateral * anim.mouth_width
    if opening < 0 and getattr(anim, "_mouth", None) is not None \
            and not hasattr(anim._mouth, "_press"):
        opening = 0.0  # a renderer without pressed lips: its closed mouth is the photo's
    try:
        return anim.draw(opening, lateral_px, 0.0, 0.0, 0.0, 0.0, 0.0, tongue=tongue)
    except TypeError:  # a renderer without a tongue
        return anim.draw(opening, lateral_px, 0.0, 0.0, 0.0, 0.0, 0.0)


def draw_all(sizes: list[int]) -> dict[str, np.ndarray]:
    """{"<portrait>_<size>_<shape index>": frame, "<portrait>_<size>_box": mouth box} drawn by
    the services/visual importable from sys.path[0]."""
    from services.visual.engines.base import RenderSpec
    from services.visual.engines.portrait import PortraitEngine
    from services.visual.face import FaceAnalyzer

    out: dict[str, np.ndarray] = {}
    silence = np.zeros(SR // 5, np.float32)
    with FaceAnalyzer() as analyzer:
        images = portraits(analyzer)
        faces = {name: analyzer.analyze(image)[0] for name, image in images.items()}
        for size in sizes:
            for name, image in images.items():
                anim = PortraitEngine().prepare(image, faces[name], silence, SR, None,
                                                RenderSpec(size=size))
                out[f"{name}_{size}_box"] = np.array(anim.mouth_box)
                for k, shape in enumerate(SHAPES.values()):
                    out[f"{name}_{size}_{k}"] = _draw(anim, *shape)
    return out


def _before(rev: str, sizes: list[int]) -> dict[str, np.ndarray]:
    """draw_all run on a temporary worktree of `rev` (its own services/visual)."""
    with tempfile.TemporaryDirectory(prefix="mouth-before-") as tmp:
        tree, dump = Path(tmp) / "tree", Path(tmp) / "frames.npz"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            env = {**os.environ, "MOUTH_SHEET_ROOT": str(tree)}
            subprocess.run([sys.executable, __file__, "--dump", str(dump), "--sizes",
                            *map(str, sizes)], cwd=tree, env=env, check=True)
            with np.load(dump) as z:
                return {k: z[k] for k in z.files}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           check=False, capture_output=True)


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    x, y, w, h = (int(v) for v in box)
    cx, cy, half = x + w // 2, y + h // 2, int(0.75 * max(w, h))
    pad = np.pad(frame, ((half, half), (half, half), (0, 0)), mode="edge")
    crop = pad[cy:cy + 2 * half, cx:cx + 2 * half]
    return cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    scale = max(0.4, img.shape[1] / 700)
    cv2.putText(img, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 0), max(1, int(2 * scale)))
    return img


def write_sheets(runs: list[tuple[str, dict[str, np.ndarray]]], sizes: list[int],
                 out: Path) -> None:
    names = [k.rsplit("_", 2)[0] for k in runs[-1][1] if k.endswith(f"_{sizes[0]}_box")]
    summary = []
    for size in sizes:
        for name in names:
            fulls, crops = [], []
            for tag, frames in runs:
                box = frames[f"{name}_{size}_box"]
                row = [frames[f"{name}_{size}_{k}"] for k in range(len(SHAPES))]
                fulls.append(np.hstack([_label(f, f"{s} ({tag})")
                                        for f, s in zip(row, SHAPES, strict=True)]))
                crops.append(np.hstack([_label(_crop(f, box), f"{s} ({tag})")
                                        for f, s in zip(row, SHAPES, strict=True)]))
            for suffix, sheet in (("", np.vstack(fulls)), ("_mouth", np.vstack(crops))):
                path = out / f"{name}_{size}{suffix}.png"
                cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
                print(path, sheet.shape)
            if size == sizes[0]:
                summary.append(np.vstack(crops))
    width = min(s.shape[1] for s in summary)
    small = np.vstack([cv2.resize(s, (width, s.shape[0] * width // s.shape[1])) for s in summary])
    small = cv2.resize(small, (1200, small.shape[0] * 1200 // small.shape[1]),
                       interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out / "before_after.jpg"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 80])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out/mouth")
    parser.add_argument("--before", help="a git revision whose renderer goes in the first row")
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024])
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # the --before subprocess
    args = parser.parse_args()
    if args.dump:
        np.savez_compressed(args.dump, **draw_all(args.sizes))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [("before", _before(args.before, args.sizes))] if args.before else []
    runs.append(("now", draw_all(args.sizes)))
    write_sheets(runs, args.sizes, args.out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.environ.get("MOUTH_SHEET_ROOT", str(ROOT)))
    sys.exit(main())
