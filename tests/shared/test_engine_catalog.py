"""The engine catalogue: one entry per engine, `auto` choosing among catalogued engines of its
stage, the file check the orchestrator runs before accepting a job, and the check that holds
each service's table of engines to the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.engine_catalog import (
    AUTO_ORDER,
    CATALOG,
    RENDERERS,
    VOICES,
    check_constructors,
    live_names,
    spec,
)
from shared.errors import ConfigError


def test_names_are_unique_and_split_by_stage() -> None:
    names = [e.name for e in CATALOG]
    assert len(names) == len(set(names))
    assert set(VOICES) | set(RENDERERS) == set(names)
    assert all(e.kind == "audio" for e in VOICES.values())
    assert all(e.kind == "visual" for e in RENDERERS.values())


def test_auto_tries_only_catalogued_engines_of_its_stage() -> None:
    assert AUTO_ORDER["audio"] == ("xtts", "piper-match", "piper")
    assert AUTO_ORDER["visual"] == ("portrait",)
    for name in AUTO_ORDER["audio"]:
        assert name in VOICES
    for name in AUTO_ORDER["visual"]:
        assert name in RENDERERS
    # the last resort of each stage needs no files, so `auto` always finds one without a sample
    assert not VOICES["piper"].files and not RENDERERS["portrait"].files


def test_live_sessions_use_piper_and_portrait() -> None:
    assert live_names("audio") == ("piper",)
    assert live_names("visual") == ("portrait",)


def test_missing_names_absent_files_relative_to_models_dir(tmp_path: Path) -> None:
    xtts = spec("xtts")
    assert xtts.missing(tmp_path) == ["xtts_v2/config.json", "xtts_v2/model.pth",
                                      "xtts_v2/vocab.json"]
    (tmp_path / "xtts_v2").mkdir()
    (tmp_path / "xtts_v2" / "config.json").write_text("{}")
    (tmp_path / "xtts_v2" / "model.pth").mkdir()  # a folder is not the file
    assert xtts.missing(tmp_path) == ["xtts_v2/model.pth", "xtts_v2/vocab.json"]
    assert spec("piper").missing(tmp_path) == []


def test_unknown_name() -> None:
    with pytest.raises(KeyError):
        spec("xtts2")


def test_a_service_table_must_name_exactly_the_catalogued_engines() -> None:
    check_constructors("visual", dict.fromkeys(RENDERERS))
    check_constructors("audio", dict.fromkeys(live_names("audio")), live=True)
    with pytest.raises(ConfigError,
                       match=r"missing \['sadtalker'\], not catalogued \['musetalk'\]"):
        check_constructors("visual", dict.fromkeys(["portrait", "wav2lip", "musetalk"]))
    with pytest.raises(ConfigError, match="out of order"):
        check_constructors("visual", dict.fromkeys(reversed(RENDERERS)))
    with pytest.raises(ConfigError, match="live audio engines piper, xtts"):
        check_constructors("audio", dict.fromkeys(["piper", "xtts"]), live=True)
