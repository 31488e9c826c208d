"""A tightly cropped photo through the whole cluster (issue 11): the avatar's notes say how the
video frames it, and the video's frames have no stretched-edge streaks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import read_frames, submit, wait_job

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
SIZE, BAND = 256, 8


def streaked_edges(frame: np.ndarray) -> list[str]:
    """Edges whose outer band changes along the edge but hardly at all going away from it."""
    g = frame.astype(np.float32).mean(axis=2)
    bands = {"top": g[:BAND], "bottom": g[-BAND:], "left": g[:, :BAND].T,
             "right": g[:, -BAND:].T}
    return [side for side, band in bands.items()
            if (along := float(np.abs(np.diff(band, axis=1)).mean())) > 0.25
            and float(np.abs(np.diff(band, axis=0)).mean()) < 0.25 * along]


def test_a_photo_cut_at_the_hair_is_framed_inside_it(client, cluster) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    photo = Image.open(DATA / "portrait.png").convert("RGB").crop((150, 60, 330, 300))
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    resp = client.post("/v1/avatars", files={"portrait": ("tight.png", buf.getvalue())})
    assert resp.status_code == 201, resp.text
    avatar = resp.json()
    said = " ".join(avatar["notes"])
    assert "the photo ends close to the face at the left and top" in said
    assert "off-centre" in said

    job = wait_job(client, submit(client, avatar["id"], "Hello, this photo is cut tight.",
                                  size=SIZE))
    assert job["status"] == "succeeded", job
    job_dir = cluster.data_dir / "jobs" / job["id"]
    framing = json.loads((job_dir / "visual" / "manifest.json").read_text())["info"]["framing"]
    assert framing["tight"] == ["left", "top"] and framing["filled"] == []
    frames = read_frames(job_dir / "compose" / "result.mp4", SIZE, [0, 5, 10, 15])
    for i, raw in frames.items():
        assert streaked_edges(np.frombuffer(raw, np.uint8).reshape(SIZE, SIZE, 3)) == [], i
    assert client.delete(f"/v1/avatars/{avatar['id']}").status_code == 204
