"""The stage table (shared/pipeline.py): one chain from the first stage to the last, every name
it holds pointing at something that exists (entry points, venvs), read from the source files
without importing any service."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from shared.pipeline import AVATAR_ANALYSIS, FIRST_STAGE, LANES, LONG, SHORT, STAGES

ROOT = Path(__file__).resolve().parents[2]


def test_the_stages_form_one_chain_in_table_order() -> None:
    names = list(STAGES)
    assert names == ["audio", "visual", "compose"]
    assert FIRST_STAGE == "audio"
    assert [STAGES[n].next_stage for n in names] == [*names[1:], None]
    for i, name in enumerate(names):
        assert STAGES[name].name == name
        assert set(STAGES[name].upstream) <= set(names[:i]), f"{name} reads a later stage"


def test_weights_cover_the_whole_job() -> None:
    assert [s.weight for s in STAGES.values()] == [0.15, 0.75, 0.10]
    assert math.isclose(sum(s.weight for s in STAGES.values()), 1.0)


def _defines(dotted: str) -> bool:
    module, _, func = dotted.rpartition(".")
    source = ROOT / (module.replace(".", "/") + ".py")
    tree = ast.parse(source.read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == func for node in tree.body)


@pytest.mark.parametrize("name", list(STAGES))
def test_every_entry_point_is_a_function_of_the_project(name: str) -> None:
    spec = STAGES[name]
    assert spec.entry_points, name
    for dotted in spec.entry_points:
        assert dotted.startswith("services."), dotted
        assert _defines(dotted), f"{dotted} is not a module-level function"
    assert (ROOT / (spec.module.replace(".", "/") + ".py")).is_file()


def test_each_stage_runs_from_a_service_venv_the_makefile_builds() -> None:
    assert {s: STAGES[s].venv for s in STAGES} == {
        "audio": "audio", "visual": "visual", "compose": "compositor"}
    for spec in STAGES.values():
        assert (ROOT / "requirements" / f"{spec.venv}.txt").is_file(), spec.venv
        assert spec.module.startswith(f"services.{spec.venv}."), spec.module


def test_visual_workers_serve_avatar_analysis_first() -> None:
    assert STAGES["visual"].worker_queues() == ("avatar", "visual", "visual-long")
    assert STAGES["visual"].entry_points == frozenset({
        "services.visual.worker.run", "services.visual.avatar.analyze"})
    assert STAGES["audio"].worker_queues() == ("audio", "audio-long")
    assert AVATAR_ANALYSIS.queue not in {q for s in STAGES.values() for q in s.queues}


def test_workers_serve_the_short_lane_first_and_short_lane_workers_nothing_else() -> None:
    for spec in STAGES.values():
        # the short lane keeps the stage's own queue: work enqueued before lanes is still served
        assert spec.queue(SHORT) == spec.work.queue
        assert spec.queues == (spec.work.queue, f"{spec.work.queue}-long")
        assert spec.worker_queues((SHORT,)) == (*(w.queue for w in spec.also_serves),
                                                spec.work.queue)
        assert spec.worker_queues((LONG, SHORT)) == spec.worker_queues(LANES)  # LANES order


def test_queues_outputs_and_scratch_folders_never_collide() -> None:
    queues = [q for s in STAGES.values() for q in s.worker_queues()]
    assert len(queues) == len(set(queues))
    outputs = [f for s in STAGES.values() for f in (s.output, *s.optional_outputs)]
    assert len(outputs) == len(set(outputs)) and "manifest.json" not in outputs
    scratch = [s.scratch for s in STAGES.values() if s.scratch is not None]
    assert scratch == ["audio.sentences"]
    scratch += [f"{s.name}.pieces" for s in STAGES.values() if s.pieces]  # shared/pieces.py
    for folder in scratch:  # never a stage's published dir or one of its work dirs
        assert folder not in STAGES and ".tmp-" not in folder
        assert folder.split(".")[0] in STAGES
