"""GET /v1/jobs/{id}/events: a real job followed over server-sent events, resumed, and refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from orchestrator.event_hub import CLIENT_NAME, SNAPSHOT_CONNECTIONS

TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Event:
    id: str | None
    name: str
    data: dict


def read_events(client: httpx.Client, job_id: str, last_id: str | None = None,
                limit_s: float = 120) -> Iterator[Event]:
    """Parse the stream line by line, as an EventSource does, until the server closes it."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                       timeout=httpx.Timeout(limit_s, connect=5)) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        event_id, name, data = None, "message", []
        for line in resp.iter_lines():
            if line == "":
                if data:
                    yield Event(event_id, name, json.loads("\n".join(data)))
                event_id, name, data = None, "message", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "id":
                    event_id = value
                elif field == "event":
                    name = value
                elif field == "data":
                    data.append(value)


def submit(client: httpx.Client, avatar_id: str, text: str) -> str:
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": text, "fps": 25,
                                         "size": 256})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


@pytest.fixture(scope="module")
def followed(client: httpx.Client, avatar_id: str) -> tuple[str, list[Event]]:
    """One short job, followed from submission to its end."""
    job_id = submit(client, avatar_id, "Hello from the event stream.")
    return job_id, list(read_events(client, job_id))


def test_stream_follows_a_job_to_the_end(followed: tuple[str, list[Event]]) -> None:
    job_id, events = followed
    first, last = events[0], events[-1]
    assert first.name == "snapshot" and first.id is None
    assert first.data["id"] == job_id and first.data["status"] in ("queued", "running")
    assert [e.name for e in events[1:]] and all(e.name in ("state", "progress")
                                                 for e in events[1:])
    assert all(e.id and e.data["type"] == e.name for e in events[1:])
    assert last.name == "state" and last.data["status"] == "succeeded"
    assert last.data["progress"] == 1.0 and last.data["error"] is None
    assert sum(e.data.get("status") in TERMINAL for e in events) == 1  # only the last

    # the job moves through the stages in order; with overlapping stages, progress of a stage
    # opened early may come before the job reaches it, never from one the job has left
    order = ["audio", "visual", "compose"]
    stages: list[str] = []
    for e in events:
        if e.name != "progress" and (not stages or stages[-1] != e.data["stage"]):
            stages.append(e.data["stage"])
        if e.name == "progress" and stages:
            assert order.index(e.data["stage"]) >= order.index(stages[-1]), e
    assert stages == order
    assert any(e.name == "progress" and e.data["stage"] == "visual" for e in events)

    progress = [e.data["progress"] for e in events]
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress == sorted(progress), progress


def test_last_event_id_resumes_after_that_entry(client: httpx.Client,
                                                followed: tuple[str, list[Event]]) -> None:
    job_id, events = followed
    entries = events[1:]
    # Resume after an audio entry, a visual progress entry, and the one before the last.
    points = [0, next(i for i, e in enumerate(entries) if e.name == "progress"
                      and e.data["stage"] == "visual"), len(entries) - 2]
    for i in points:
        resumed = list(read_events(client, job_id, last_id=entries[i].id))
        assert resumed[0].name == "snapshot" and resumed[0].data["status"] == "succeeded"
        assert [(e.id, e.name, e.data) for e in resumed[1:]] == [(e.id, e.name, e.data)
                                                                 for e in entries[i + 1:]]
    # From the very start ("0"), the whole history replays, beginning with the job's creation.
    replay = list(read_events(client, job_id, last_id="0"))
    assert replay[1].data == {"type": "state", "status": "queued", "stage": "audio",
                              "stage_state": "queued", "attempt": 1, "progress": 0.0,
                              "error": None}
    assert replay[-1].id == events[-1].id


def test_finished_job_gives_its_snapshot_and_ends(client: httpx.Client,
                                                 followed: tuple[str, list[Event]]) -> None:
    job_id, events = followed
    only = list(read_events(client, job_id, limit_s=10))
    assert [e.name for e in only] == ["snapshot"]
    assert only[0].data["status"] == "succeeded" and only[0].data["progress"] == 1.0
    assert only[0].data["result_url"] == f"/v1/jobs/{job_id}/result"
    # Resuming from the terminal entry itself: nothing is left, the stream still ends.
    tail = list(read_events(client, job_id, last_id=events[-1].id, limit_s=15))
    assert [e.name for e in tail] == ["snapshot", "state"]
    assert tail[-1].data["status"] == "succeeded"


def test_unknown_job_and_bad_last_event_id(client: httpx.Client,
                                           followed: tuple[str, list[Event]]) -> None:
    resp = client.get("/v1/jobs/0123456789abcdef/events")
    assert resp.status_code == 404
    assert resp.json() == {"error": "job_not_found",
                           "message": "no job with id '0123456789abcdef'"}
    assert client.get("/v1/jobs/..%2F..%2Fetc/events").status_code == 404
    for bad in ("yesterday", "18446744073709551616-0"):  # the second: past Redis's 2**64 - 1
        resp = client.get(f"/v1/jobs/{followed[0]}/events", headers={"Last-Event-ID": bad})
        assert resp.status_code == 400
        assert "last-event-id" in resp.json()["message"].lower()
    # The largest id Redis takes is one: nothing comes after it, and the job has ended.
    tail = list(read_events(client, followed[0], last_id="18446744073709551615-0", limit_s=15))
    assert [e.name for e in tail] == ["snapshot", "state"]


def hub_connections(conn: redis.Redis) -> list[dict[str, Any]]:
    """The API's event-hub connections (its reader's and its record reads'), by their name."""
    return [c for c in conn.client_list() if c["name"] == CLIENT_NAME]


def wait_for(predicate: Callable[[], bool], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_client_that_leaves_is_unsubscribed(client: httpx.Client, avatar_id: str,
                                              redis_server: Any) -> None:
    conn = redis.Redis.from_url(redis_server.url)

    def reading() -> bool:  # the hub's reader waits in an XREAD: some stream is followed
        return any(c["cmd"] == "xread" and "b" in c["flags"] for c in hub_connections(conn))

    def unread_for(seconds: float) -> bool:  # no XREAD over that long (one blocks 0.25 s)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if reading():
                return False
            time.sleep(0.02)
        return True

    # About 100 s of speech at 512 px: minutes of work on a CI machine, so the job is still
    # running while the stream is checked (a finished job's stream ends by itself).
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "fps": 25, "size": 512,
                                         "text": "Nobody waits for me, and this goes on. " * 40})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    try:
        wait_for(lambda: unread_for(1.0), "an earlier stream is still followed", within=20)
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()  # kept: a discarded iterator closes the response
            next(lines)  # the stream is open and being served
            status = client.get(f"/v1/jobs/{job_id}").json()["status"]
            assert status not in TERMINAL, f"the job ended ({status}) before it could be watched"
            wait_for(reading, "no XREAD reads the stream")
            held = len(hub_connections(conn))
        # Gone at once: the hub stops reading for it within one XREAD (0.25 s).
        wait_for(lambda: unread_for(1.0), "the hub still reads for a client that left")
        assert 1 <= held <= 1 + SNAPSHOT_CONNECTIONS
        assert len(hub_connections(conn)) == held  # the hub's connections stay; none per client
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
        conn.close()


def test_fifty_streams_share_a_few_redis_connections(client: httpx.Client, avatar_id: str,
                                                     redis_server: Any) -> None:
    """50 clients follow 50 jobs on one API process: its event hub reads them all over a fixed
    handful of Redis connections (one per stream before it), and each stream ends with its
    job's terminal event."""
    conn = redis.Redis.from_url(redis_server.url)
    jobs = [submit(client, avatar_id, f"Stream number {i} of fifty.") for i in range(50)]
    opened = threading.Semaphore(0)

    def follow(job_id: str) -> list[Event]:
        events: list[Event] = []
        with httpx.Client(base_url=str(client.base_url)) as own:
            for event in read_events(own, job_id, limit_s=180):
                events.append(event)
                if len(events) == 1:
                    opened.release()
        return events

    try:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            streams = [pool.submit(follow, job_id) for job_id in jobs]
            for _ in jobs:
                assert opened.acquire(timeout=60), "not every stream opened"
            named = hub_connections(conn)
            assert 1 <= len(named) <= 1 + SNAPSHOT_CONNECTIONS, named
            for job_id in jobs:  # queued or running: each ends now, and says so
                client.post(f"/v1/jobs/{job_id}/cancel")
            results = [s.result(timeout=120) for s in streams]
        for job_id, events in zip(jobs, results, strict=True):
            final = client.get(f"/v1/jobs/{job_id}").json()["status"]
            assert final in TERMINAL
            assert events[0].name == "snapshot" and events[0].data["id"] == job_id
            assert events[-1].name == "state" and events[-1].data["status"] == final, events
        assert len(hub_connections(conn)) <= 1 + SNAPSHOT_CONNECTIONS
    finally:
        for job_id in jobs:
            client.post(f"/v1/jobs/{job_id}/cancel")
        conn.close()


def test_cli_watch_follows_the_stream(client: httpx.Client, avatar_id: str) -> None:
    from orchestrator import cli

    job_id = submit(client, avatar_id, "Watched by the command line.")
    final = cli.watch(client, job_id, quiet=True)
    assert final["id"] == job_id and final["status"] == "succeeded"
    assert final["progress"] == 1.0


def test_cli_watch_falls_back_to_polling(cluster, avatar_id: str) -> None:  # type: ignore[no-untyped-def]
    """Fault injection: the event stream breaks mid-way; watch() polls to the end instead."""
    from orchestrator import cli

    with httpx.HTTPTransport() as real:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/events"):
                raise httpx.RemoteProtocolError("peer closed connection", request=request)
            return real.handle_request(request)

        with httpx.Client(base_url=cluster.url, transport=httpx.MockTransport(handler),
                          timeout=60) as broken:
            job_id = submit(broken, avatar_id, "Polled instead.")
            final = cli.watch(broken, job_id, quiet=True)
    assert final["id"] == job_id and final["status"] == "succeeded"
