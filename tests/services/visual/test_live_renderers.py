"""Live renderers by name: the registry holds exactly the catalogue's live renderers (the names
the orchestrator accepts), "auto" is the first, unknown names are refused with the valid ones,
and the portrait renderer rigs a real avatar that poses as the live session asks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from services.visual.engines.base import RenderSpec
from services.visual.engines.live import (
    LIVE_RENDERERS,
    LiveRenderers,
    get_live_renderer,
    live_renderer_name,
)
from services.visual.face import FaceAnalyzer
from shared.engine_catalog import live_names
from shared.errors import InvalidInput

PORTRAIT = Path(__file__).resolve().parents[2] / "data" / "portrait.png"


def test_the_registry_is_the_catalogues_live_renderers() -> None:
    assert tuple(LIVE_RENDERERS) == live_names("visual")
    assert live_renderer_name("auto") == live_names("visual")[0] == "portrait"
    assert get_live_renderer("portrait") is LIVE_RENDERERS["portrait"]


@pytest.mark.parametrize("name", ["wav2lip", "sadtalker", "nope"])
def test_a_renderer_that_cannot_draw_live_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match=f"{name!r}; expected one of: auto, portrait$"):
        get_live_renderer(name)


def test_the_portrait_renderer_rigs_an_avatar_that_poses_live(tmp_path: Path) -> None:
    portrait = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    with FaceAnalyzer() as analyzer:
        face = analyzer.analyze(portrait)[0]
    renderers = LiveRenderers(tmp_path)
    renderer = renderers.get("auto")
    assert renderers.get("portrait") is renderer
    rig = renderer.rig(portrait, face, RenderSpec(fps=25, size=256, aspect="16:9"))
    anim = rig.animation
    assert (anim.width, anim.height) == RenderSpec(size=256, aspect="16:9").frame
    assert 0 < anim.mouth_width < rig.face_width < anim.width
    shut = anim.draw(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    wide = anim.draw(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert shut.shape == (anim.height, anim.width, 3) and shut.dtype == np.uint8
    x, y, w, h = anim.mouth_box
    assert np.abs(wide[y:y + h, x:x + w].astype(int) - shut[y:y + h, x:x + w]).mean() > 5
