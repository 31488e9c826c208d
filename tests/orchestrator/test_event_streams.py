"""MAX_EVENT_STREAMS: an orchestrator follows at most that many event streams at once, however
many ask together; past it a stream is refused with 503 and Retry-After, and a closed stream gives
its place back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import CLUSTER_ENV, Cluster


@pytest.fixture(scope="module")
def capped(cluster) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    """A second orchestrator on the session cluster's Redis and data, capped at 2 streams."""
    second = Cluster(cluster.redis, cluster.data_dir,
                     {**CLUSTER_ENV, "MAX_EVENT_STREAMS": "2", "RUN_RECONCILER": "false"})
    try:
        second.start_orchestrator()
        yield second
    finally:
        second.stop()


def long_job(client: httpx.Client, avatar_id: str) -> str:
    """A job of minutes of speech: still running while its streams are checked."""
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "size": 512,
                                         "text": "Nobody waits for me, and this goes on. " * 40})
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["id"]
    return job_id


def test_streams_past_the_cap_get_503_and_retry_after(capped: Cluster, client: httpx.Client,
                                                      avatar_id: str) -> None:
    job_id = long_job(client, avatar_id)
    url = f"/v1/jobs/{job_id}/events"
    try:
        with httpx.Client(base_url=capped.url, timeout=30) as c:
            with c.stream("GET", url) as one, c.stream("GET", url) as two:
                assert (one.status_code, two.status_code) == (200, 200)
                firsts = [one.iter_lines(), two.iter_lines()]  # kept: discarding one closes it
                assert all(next(lines).startswith("retry:") for lines in firsts)
                refused = c.get(url)
                assert refused.status_code == 503
                assert refused.json()["error"] == "too_many_streams"
                assert "GET /v1/jobs/" in refused.json()["message"]
                assert int(refused.headers["retry-after"]) > 0
                assert c.get(f"/v1/jobs/{job_id}").status_code == 200  # other routes still work
            # both streams closed: their places come back (the server notices within a second)
            deadline = time.monotonic() + 15
            while True:
                with c.stream("GET", url) as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "closed streams did not give their places back"
                time.sleep(0.5)
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")


async def open_together(base_url: str, url: str, n: int) -> list[int]:
    """The statuses of `n` streams asked for at once, each held open until all have answered."""
    answered = asyncio.Barrier(n)

    async def one(c: httpx.AsyncClient) -> int:
        async with c.stream("GET", url) as resp:
            await answered.wait()  # a stream let in keeps its place until every one answered
            return resp.status_code

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as c:
        return await asyncio.wait_for(asyncio.gather(*(one(c) for _ in range(n))), 60)


def test_streams_asked_for_together_never_pass_the_cap(capped: Cluster, client: httpx.Client,
                                                       avatar_id: str) -> None:
    """The place is counted and taken in one step, before the route awaits Redis: of 60
    clients asking at once, at most MAX_EVENT_STREAMS (2) get a stream, the others a 503."""
    job_id = long_job(client, avatar_id)
    url = f"/v1/jobs/{job_id}/events"
    let_in: list[int] = []
    try:
        # rounds until the places held by earlier streams have come back and two are let in
        deadline = time.monotonic() + 20
        while (not let_in or let_in[-1] < 2) and time.monotonic() < deadline:
            statuses = asyncio.run(open_together(capped.url, url, 60))
            assert set(statuses) <= {200, 503}, statuses
            let_in.append(statuses.count(200))
            assert let_in[-1] <= 2, f"{let_in[-1]} streams let in at once past a cap of 2"
        assert let_in[-1] == 2, f"streams let in per round: {let_in}"
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
