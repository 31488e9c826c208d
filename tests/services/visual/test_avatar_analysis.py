"""The avatar analysis job: face choice among several, face.json and the boxed thumbnail."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual import avatar

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test portrait, and beside it the same person at 60% size."""
    big = cv2.imread(str(PORTRAIT))
    small = cv2.resize(big, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((big.shape[0], big.shape[1] + small.shape[1], 3), 128, np.uint8)
    canvas[:, :big.shape[1]] = big
    canvas[:small.shape[0], big.shape[1]:] = small
    folder = tmp_path_factory.mktemp("avatar")
    cv2.imwrite(str(folder / "portrait.png"), canvas)
    return folder


def test_the_largest_face_is_the_default(two_faces: Path) -> None:
    found = avatar.analyze(str(two_faces))
    assert found["faces"] == 2 and found["chosen"] == 0
    (x0, _, w0, _), (x1, _, w1, _) = found["boxes"]
    assert w0 > w1 and x1 > x0  # numbered largest first
    face = json.loads((two_faces / "face.json").read_text())
    assert face["box"] == found["boxes"][0]


def test_another_face_can_be_chosen_and_the_thumbnail_shows_it(two_faces: Path) -> None:
    found = avatar.analyze(str(two_faces), face=1)
    assert found["chosen"] == 1
    face = json.loads((two_faces / "face.json").read_text())
    assert face["box"] == found["boxes"][1]
    thumb = cv2.imread(str(two_faces / "thumbnail.jpg"))
    assert thumb is not None and max(thumb.shape[:2]) == avatar.THUMB_SIDE
    # the chosen face's box is drawn in green, the other one in grey
    scale = avatar.THUMB_SIDE / max(cv2.imread(str(two_faces / "portrait.png")).shape[:2])
    x, y, w, h = (round(v * scale) for v in found["boxes"][1])
    edge = thumb[y + h // 4:y + 3 * h // 4, max(0, x - 1):x + 2].reshape(-1, 3).astype(int)
    b, g, r = np.median(edge, axis=0)
    assert g > r + 60 and g > b + 60


def test_a_face_number_beyond_the_faces_found_writes_nothing(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "portrait.png"), cv2.imread(str(PORTRAIT)))
    found = avatar.analyze(str(tmp_path), face=3)
    assert found == {"faces": 1, "boxes": found["boxes"], "chosen": None, "turned": 0,
                     "width": 512, "height": 512}
    assert not (tmp_path / "face.json").exists() and not (tmp_path / "thumbnail.jpg").exists()


def test_a_tight_photo_is_said_to_be_framed_off_centre(tmp_path: Path) -> None:
    """The hair touches the top edge: the notes and the thumbnail say how the video frames it."""
    cv2.imwrite(str(tmp_path / "portrait.png"), cv2.imread(str(PORTRAIT))[60:300, 150:330])
    found = avatar.analyze(str(tmp_path))
    assert found["chosen"] == 0 and found["framing"]["tight"] == ["left", "top"]
    (note,) = found["notes"]
    assert note.startswith("the photo ends close to the face at the left and top: the face is")
    assert "off-centre" in note and "(framing 'face', 1:1)" in note
    thumb = cv2.imread(str(tmp_path / "thumbnail.jpg"))
    assert max(thumb.shape[:2]) == avatar.THUMB_SIDE
    # the frame drawn in yellow (B low, G and R high) along its bottom edge, inside the photo
    x, y, w, h = found["framing"]["crop"]
    scale = avatar.THUMB_SIDE / 240
    row = round((y + h) * scale) - 1
    line = thumb[row - 1:row + 2, round(x * scale) + 10:round((x + w) * scale) - 10]
    b, g, r = np.median(line.reshape(-1, 3), axis=0)
    assert r > 150 and g > 120 and b < 110
    # and the caption strip at the bottom
    assert thumb[-18:].mean() < 0.6 * thumb[-60:-30].mean()


def test_a_photo_with_room_around_the_face_gets_no_framing_note(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "portrait.png"), cv2.imread(str(PORTRAIT)))
    found = avatar.analyze(str(tmp_path))
    assert found["notes"] == [] and found["framing"]["zoom"] == 1.0
