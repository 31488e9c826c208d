"""The test suite's own layout. Its folders are no packages (tests import `conftest` and
`helpers` from beside them), so pytest names each module by its file name alone: two files of
one name in two folders make the second fail to import ("import file mismatch") whenever both
are collected in one run, e.g. `pytest tests`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_module_name_is_used_once_in_the_suite() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name != "conftest.py":  # pytest imports each folder's conftest on its own
            where[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
