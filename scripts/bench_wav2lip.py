"""Wav2Lip speed on this machine, random weights (speed does not depend on their values).

    python scripts/bench_wav2lip.py --device cuda --batch 64 --fp16 --frames 1024

Prints frames/s twice: the whole network per frame (face encoder included, as the official
inference runs it) and the engine's path for a still portrait (face encoded once, batch norms
folded). Runs with the visual venv or any python with torch and numpy, from the repo root.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from services.visual.engines.wav2lip_model import Wav2Lip, fuse_batch_norms  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(model: Wav2Lip, device: str, dtype: torch.dtype, batch: int, frames: int,
          cached_face: bool) -> float:
    face = torch.rand(1 if cached_face else batch, 6, 96, 96, device=device, dtype=dtype)
    mel = torch.rand(batch, 1, 80, 16, device=device, dtype=dtype) * 8 - 4
    with torch.inference_mode():
        skips = model.encode_face(face) if cached_face else None
        for _ in range(2):  # warm-up: allocator, cudnn autotune
            model.decode(mel, skips) if skips is not None else model(mel, face)
        _sync(device)
        done, start = 0, time.perf_counter()
        while done < frames:
            model.decode(mel, skips) if skips is not None else model(mel, face)
            done += batch
        _sync(device)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--fp16", action="store_true", help="half precision (cuda only)")
    parser.add_argument("--frames", type=int, default=256, help="frames to time, per variant")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.float16 if args.fp16 else torch.float32
    plain = Wav2Lip().eval().to(args.device, dtype=dtype)
    fused = fuse_batch_norms(Wav2Lip().eval()).to(args.device, dtype=dtype)
    label = (f"device={args.device} batch={args.batch} fp16={args.fp16} "
             f"threads={torch.get_num_threads()} torch={torch.__version__}")
    full = bench(plain, args.device, dtype, args.batch, args.frames, cached_face=False)
    print(f"{label}: full network per frame: {full:.2f} frames/s", flush=True)  # noqa: T201
    engine = bench(fused, args.device, dtype, args.batch, args.frames, cached_face=True)
    print(f"{label}: engine path (face encoded once, BN folded): {engine:.2f} frames/s")  # noqa: T201


if __name__ == "__main__":
    main()
