"""MAX_EVENT_STREAMS: an orchestrator follows at most that many event streams at once; past it
a stream is refused with 503 and Retry-After, and a closed stream gives its place back."""

from __future__ import annotations

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


def test_streams_past_the_cap_get_503_and_retry_after(capped: Cluster, client: httpx.Client,
                                                      avatar_id: str) -> None:
    # minutes of speech: the job is still running while the streams are checked
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "size": 512,
                                         "text": "Nobody waits for me, and this goes on. " * 40})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
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
