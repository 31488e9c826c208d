"""The cluster the tests drive: started once for the session (see cluster.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import Cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("jayavatar"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def avatar_id(cluster: Cluster) -> str:
    """An avatar of tests/data/portrait.png, once the live workers take sessions."""
    avatar = cluster.create_avatar()
    cluster.wait_live_workers(avatar)
    return avatar
