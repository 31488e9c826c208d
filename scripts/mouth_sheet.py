"""Full-size frames of the `portrait` renderer's mouth shapes, to look at (not a benchmark).

For the test photo, its grey-scale copy and the photo turned 30 degrees away (yaw) it draws the
mouth closed (p/b/m), on a wide vowel ("ah", spread), on l/t/d/n (tongue tip) and on o/u
(rounded) with `Animation.draw`, and writes out/mouth/<portrait>_<size>.png: one row per shape,
full frames side by side, then a 2x crop of the mouth of each. With `--before REV` the renderer
of that git revision is drawn in the first column (its module is loaded from `git show`).
Run with .venvs/visual/bin/python.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.visual.engines import portrait as current  # noqa: E402
from services.visual.face import FaceAnalyzer  # noqa: E402
from tests.services.visual.turned import turned  # noqa: E402

SR = 16000
# name: (opening, lateral as a fraction of mouth width, tongue)
SHAPES = {"closed p/b/m": (0.0, 0.0, 0.0), "wide vowel": (0.95, 0.06, 0.0),
          "l/t/d/n": (0.3, 0.02, 1.0), "o/u": (0.5, -0.09, 0.0)}


def _module_at(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:services/visual/engines/portrait.py"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "portrait_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("portrait_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["portrait_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _draw(anim, opening: float, lateral: float, tongue: float) -> np.ndarray:
    lateral_px = lateral * anim.mouth_width
    try:
        return anim.draw(opening, lateral_px, 0.0, 0.0, 0.0, 0.0, 0.0, tongue=tongue)
    except TypeError:  # a renderer without a tongue
        return anim.draw(opening, lateral_px, 0.0, 0.0, 0.0, 0.0, 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out/mouth")
    parser.add_argument("--before", help="a git revision whose renderer goes in the first column")
    parser.add_argument("--sizes", type=int, nargs="*", default=[512])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    modules = ([_module_at(args.before)] if args.before else []) + [current]
    photo = cv2.cvtColor(cv2.imread(str(ROOT / "tests/data/portrait.png")), cv2.COLOR_BGR2RGB)
    with FaceAnalyzer() as analyzer:
        box = analyzer.analyze(photo)[0].box
        grey = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        portraits = {"photo": photo, "greyscale": grey, "yaw_30": turned(photo, box, "yaw", 30)}
        faces = {name: analyzer.analyze(image)[0] for name, image in portraits.items()}
    silence = np.zeros(SR // 5, np.float32)
    for size in args.sizes:
        for name, image in portraits.items():
            rows = []
            for module in modules:
                anim = module.PortraitEngine().prepare(image, faces[name], silence, SR, None,
                                                       module.RenderSpec(size=size))
                x, y, w, h = anim.mouth_box
                cx, cy, half = x + w // 2, y + h // 2, int(0.75 * max(w, h))
                fulls, crops = [], []
                for label, shape in SHAPES.items():
                    frame = _draw(anim, *shape)
                    img = frame.copy()
                    tag = f"{label} ({'before' if module is not current else 'now'})"
                    cv2.putText(img, tag, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * size / 512,
                                (255, 255, 0), 2)
                    fulls.append(img)
                    pad = np.pad(frame, ((half, half), (half, half), (0, 0)), mode="edge")
                    crop = pad[cy:cy + 2 * half, cx:cx + 2 * half]
                    crops.append(cv2.resize(crop, None, fx=2, fy=2,
                                            interpolation=cv2.INTER_NEAREST))
                rows.append((fulls, crops))
            full_sheet = np.vstack([np.hstack(f) for f, _ in rows])
            crop_sheet = np.vstack([np.hstack(c) for _, c in rows])
            cv2.imwrite(str(args.out / f"{name}_{size}.png"),
                        cv2.cvtColor(full_sheet, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(args.out / f"{name}_{size}_mouth.png"),
                        cv2.cvtColor(crop_sheet, cv2.COLOR_RGB2BGR))
            print(args.out / f"{name}_{size}.png", full_sheet.shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
