"""The renderers by name: every one the catalogue lists loads, unknown names are refused with
the valid ones, and the files the orchestrator checks are the files the engines need."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.visual.engines import get_engine
from services.visual.engines.sadtalker import SadTalkerEngine
from shared.engine_catalog import RENDERERS, SADTALKER_DIR
from shared.errors import InvalidInput, MissingWeights


def test_every_catalogued_renderer_loads() -> None:
    for name in RENDERERS:
        assert callable(get_engine(name))


def test_unknown_renderer_names_the_valid_ones() -> None:
    with pytest.raises(InvalidInput, match="'nope'; expected one of: portrait, wav2lip, sadtalker"):
        get_engine("nope")


def test_sadtalker_needs_exactly_the_catalogued_files(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SADTALKER_HOME", raising=False)  # MODELS_DIR/sadtalker, as checked
    spec = RENDERERS["sadtalker"]
    for rel in spec.files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert spec.missing(tmp_path) == []
    assert SadTalkerEngine(tmp_path, python="python3").home == (tmp_path / SADTALKER_DIR).resolve()
    (tmp_path / spec.files[-1]).unlink()
    assert spec.missing(tmp_path) == [spec.files[-1]]
    with pytest.raises(MissingWeights, match=Path(spec.files[-1]).name):
        SadTalkerEngine(tmp_path, python="python3")


def test_wav2lip_needs_exactly_the_catalogued_file(tmp_path: Path) -> None:
    spec = RENDERERS["wav2lip"]
    assert spec.missing(tmp_path) == list(spec.files)
    with pytest.raises(MissingWeights, match=spec.files[0]):
        get_engine("wav2lip")(tmp_path)
