"""Tight crops of the test portrait, rendered with `framing` `face`: one PNG per crop.

Each PNG holds the crop itself (scaled to the frame height) beside frame 0 and the widest-open
frame of a short clip, at full size, so stretched edges or a bad seam show at a glance.
`--before DIR` puts the same frames from an earlier run (e.g. made before a change) in a row
above. Run with .venvs/visual/bin/python; it needs no audio venv (the speech is synthetic).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.visual.engines.base import RenderSpec  # noqa: E402
from services.visual.engines.portrait import PortraitEngine  # noqa: E402
from services.visual.face import FaceAnalyzer  # noqa: E402

# (rows, cols) of tests/data/portrait.png: the photo ends at the hair, beside the face, under
# the chin, on all four sides, and a 112 px square around the face
CROPS = {
    "top": ((60, 300), (150, 330)),
    "side": ((10, 420), (165, 470)),
    "bottom": ((0, 200), (100, 360)),
    "all_four": ((50, 200), (165, 285)),
    "face_112": ((68, 180), (169, 281)),
}
SR = 16000


def speech(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    return (0.3 * wave * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t))).astype(np.float32)


def crops() -> dict[str, np.ndarray]:
    portrait = cv2.cvtColor(cv2.imread(str(ROOT / "tests/data/portrait.png")), cv2.COLOR_BGR2RGB)
    return {name: np.ascontiguousarray(portrait[r0:r1, c0:c1])
            for name, ((r0, r1), (c0, c1)) in CROPS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "framing")
    parser.add_argument("--before", type=Path, help="a folder of an earlier run to compare with")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--aspect", default="1:1")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = PortraitEngine()
    with FaceAnalyzer() as analyzer:
        for name, image in crops().items():
            faces = analyzer.analyze(image)
            if not faces:
                print(f"{name}: no face found")
                continue
            anim = engine.prepare(image, faces[0], speech(), SR, None,
                                  RenderSpec(size=args.size, aspect=args.aspect))
            widest = int(np.argmax(anim.tracks.opening))
            row = [anim.frame(0), anim.frame(widest)]
            tag = f"{name}_{args.aspect.replace(':', 'x')}"
            cv2.imwrite(str(args.out / f"frames_{tag}.png"),
                        cv2.cvtColor(np.hstack(row), cv2.COLOR_RGB2BGR))
            h = anim.height
            photo = cv2.resize(image, (max(1, round(image.shape[1] * h / image.shape[0])), h),
                               interpolation=cv2.INTER_CUBIC)
            sheet = np.hstack([photo, np.full((h, 8, 3), 255, np.uint8), *row])
            if args.before and (args.before / f"frames_{tag}.png").exists():
                old = cv2.cvtColor(cv2.imread(str(args.before / f"frames_{tag}.png")),
                                   cv2.COLOR_BGR2RGB)
                top = np.hstack([np.full((h, photo.shape[1] + 8, 3), 255, np.uint8), old])
                sheet = np.vstack([top, np.full((8, sheet.shape[1], 3), 255, np.uint8), sheet])
            cv2.imwrite(str(args.out / f"sheet_{tag}.png"),
                        cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
            try:
                from services.visual.framing import plan_face
            except ImportError:  # a tree from before framing.py: no plan to report
                print(f"{name} {image.shape[1]}x{image.shape[0]}")
                continue
            plan = plan_face(faces[0].landmarks, (image.shape[1], image.shape[0]),
                             (anim.width, anim.height))
            print(f"{name} {image.shape[1]}x{image.shape[0]}: zoom {plan.zoom:.2f}, offset "
                  f"{plan.offset[0]:+.2f} {plan.offset[1]:+.2f}: {plan.note or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
