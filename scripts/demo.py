"""`make demo`: start the cluster, turn the sample portrait and a text into an MP4, stop.

Prints the wall time of each stage and the real-time factor, read from the stage manifests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Stack, log  # noqa: E402

from orchestrator.cli import main as cli  # noqa: E402
from shared.layout import Layout  # noqa: E402
from shared.pipeline import STAGES  # noqa: E402

TEXT = ("Hello! I am JayAvatar. I turn one photo and a few lines of text into a video of you "
        "speaking, made entirely on your own machine.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    parser.add_argument("--output", type=Path, default=Path("out/demo.mp4"))
    parser.add_argument("--portrait", type=Path, default=ROOT / "assets/sample_portrait.png")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--redis-port", type=int, default=6391)
    args = parser.parse_args()

    stack = Stack(args.data_dir, args.redis_port, args.port, args.data_dir / "logs")
    try:
        stack.start()
        t0 = time.monotonic()
        rc = cli(["--server", stack.api_url, "submit", "--avatar", str(args.portrait),
                  "--text", args.text, "--wait", "-o", str(args.output)])
        wall = time.monotonic() - t0
    finally:
        stack.stop()
    if rc != 0:
        log(f"demo failed; logs are in {args.data_dir / 'logs'}")
        return rc
    jobs = sorted(Layout(args.data_dir).jobs.iterdir(), key=lambda p: p.stat().st_mtime)
    job_dir = jobs[-1]
    seconds = {s: json.loads((job_dir / s / "manifest.json").read_text())["timings"]["seconds"]
               for s in STAGES}
    speech = json.loads((job_dir / "audio/manifest.json").read_text())["info"]["duration"]
    log(f"wrote {args.output}: {speech:.2f} s of speech in {wall:.2f} s wall "
        f"(real-time factor {wall / speech:.2f}); stages: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
