"""Many sockets on live sessions, through the real cluster (orchestrator/viewers.py, relay.py and
the live hub of event_hub.py): sockets past a session's limit are refused with 4429 and a
sentence, however many sockets watch, the relays hold a fixed number of Redis connections and
another session starts at once, and a socket that stops reading is dropped alone."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from conftest import CLUSTER_ENV, Cluster
from live_client import LiveClient
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

pytestmark = pytest.mark.slow

SOCKETS = 150  # the red team's count: past the relays' old pool of 100 Redis connections
HUB_CONNECTIONS = 1 + 8  # the live hub's reader and its pool (routes/sessions.py)
VICTIM_READY_S = 5.0  # POST to `ready` of a new session while the sockets are open


@dataclass
class Watcher:
    """One socket of many, read in the background: when `ready` came, media messages, close."""

    ready: float | None = None
    media: int = 0
    closed: tuple[int, str] | None = None

    async def run(self, url: str) -> None:
        try:
            async with aconnect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
                try:
                    async for message in ws:
                        if isinstance(message, bytes):
                            self.media += 1
                        elif json.loads(message).get("type") == "ready":
                            self.ready = time.monotonic()
                except ConnectionClosed:
                    pass
                self.closed = (ws.close_code or 1006, ws.close_reason or "")
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            self.closed = (0, f"no connection: {exc!r}")


def _ws_url(cluster: Cluster, session_id: str) -> str:
    return cluster.url.replace("http://", "ws://") + f"/v1/sessions/{session_id}/ws"


def _new_session(client: httpx.Client, avatar_id: str, **options: object) -> str:
    resp = client.post("/v1/sessions", json={"avatar_id": avatar_id, **options})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


@dataclass
class Victim:
    ready_s: float  # from POST /v1/sessions to its ready event
    longest_gap_s: float  # between media messages over WATCH_S
    closed: tuple[int, str] | None


def _victim(cluster: Cluster, avatar_id: str, watch_s: float = 5.0) -> Victim:
    """Someone else's new session while the sockets are open: how soon it starts, and whether
    it keeps playing."""
    with httpx.Client(base_url=cluster.url, timeout=60) as http:
        asked = time.monotonic()
        sid = _new_session(http, avatar_id, size=256)
        c = LiveClient(cluster.url, sid)
        try:
            c.wait_event("ready", timeout=60)
            ready_s = time.monotonic() - asked
            time.sleep(watch_s)
            arrivals = [t for t, _ in c.media()]
            gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
            gaps.append(time.monotonic() - arrivals[-1])
            return Victim(ready_s, max(gaps), c.closed)
        finally:
            c.close()
            http.delete(f"/v1/sessions/{sid}")


def _hub_connections(cluster: Cluster) -> int:
    conn = redis_lib.Redis.from_url(cluster.redis.url)
    return sum(1 for c in conn.client_list() if c["name"] == "jayavatar-live")


async def _crowd(cluster: Cluster, session_id: str, avatar_id: str, n: int
                 ) -> tuple[list[Watcher], Victim, int]:
    """`n` sockets on one session, all at once; once each is in (ready) or refused, another
    session is started beside them. Returns the sockets, that session, and the live hubs'
    Redis connections counted meanwhile."""
    watchers = [Watcher() for _ in range(n)]
    tasks = [asyncio.create_task(w.run(_ws_url(cluster, session_id))) for w in watchers]
    try:
        deadline = time.monotonic() + 120
        while any(w.ready is None and w.closed is None for w in watchers):
            assert time.monotonic() < deadline, \
                f"{sum(w.ready is None and w.closed is None for w in watchers)} sockets hang"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the ones let in stream meanwhile
        held = await asyncio.to_thread(_hub_connections, cluster)
        victim = await asyncio.to_thread(_victim, cluster, avatar_id)
        return watchers, victim, held
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(_places_given_back, cluster)


def _places_given_back(cluster: Cluster, timeout: float = 30) -> None:
    """Wait until the sockets of this test's address are all unregistered."""
    conn = redis_lib.Redis.from_url(cluster.redis.url)
    started = time.monotonic()
    while (left := conn.zcard("ja:live:client:127.0.0.1")) and \
            time.monotonic() - started < timeout:
        time.sleep(0.1)
    assert not left, f"{left} sockets closed {timeout:.0f} s ago are still registered"
    print(f"every socket's place given back {time.monotonic() - started:.1f} s after it closed")


def test_sockets_past_a_sessions_limit_are_refused_and_others_start(
        client, avatar_id, live_cluster) -> None:  # type: ignore[no-untyped-def]
    """The red team's repro: 150 sockets on one's own session. Past LIVE_MAX_VIEWERS (8) each
    is refused with 4429 and a sentence, and someone else's new session still starts at once
    (no Redis MaxConnectionsError)."""
    sid = _new_session(client, avatar_id, size=256, fps=10)
    try:
        watchers, victim, held = asyncio.run(_crowd(live_cluster, sid, avatar_id, SOCKETS))
    finally:
        client.delete(f"/v1/sessions/{sid}")
    let_in = [w for w in watchers if w.ready is not None]
    refused = [w for w in watchers if w.ready is None]
    codes = {w.closed[0] for w in refused if w.closed}
    print(f"\n{SOCKETS} sockets on one session: {len(let_in)} let in, {len(refused)} refused "
          f"{codes}; another session ready {victim.ready_s:.2f} s after its POST, longest "
          f"media gap {victim.longest_gap_s:.2f} s; live hub Redis connections {held}")
    assert len(let_in) == 8, [w.closed for w in watchers][:10]
    assert all(w.media > 5 for w in let_in), [w.media for w in let_in]
    assert codes == {4429}, [w.closed for w in refused][:5]
    assert all("LIVE_MAX_VIEWERS" in w.closed[1] for w in refused if w.closed)
    assert victim.closed is None and victim.longest_gap_s < 1.5, victim
    assert victim.ready_s < VICTIM_READY_S, victim
    assert held <= HUB_CONNECTIONS


def test_a_client_address_holds_a_limited_number_of_sockets(
        client, avatar_id, live_cluster) -> None:  # type: ignore[no-untyped-def]
    """Over sessions too: LIVE_MAX_CLIENT_SOCKETS (16) per address, the 17th refused."""
    sids = [_new_session(client, avatar_id, size=256, fps=10) for _ in range(3)]
    clients: list[LiveClient] = []
    try:
        for k in range(16):
            clients.append(LiveClient(live_cluster.url, sids[k % 3]))
        for c in clients:
            c.wait_event("ready", timeout=60)
        extra = LiveClient(live_cluster.url, sids[0])
        extra._reader.join(timeout=20)
        assert extra.closed is not None and extra.closed[0] == 4429, extra.closed
        assert "LIVE_MAX_CLIENT_SOCKETS" in extra.closed[1]
        clients.pop().close()  # one place given back: another socket is let in
        deadline = time.monotonic() + 10
        while True:
            again = LiveClient(live_cluster.url, sids[0])
            try:
                again.wait_event("ready", timeout=30)
                break
            except AssertionError:
                assert time.monotonic() < deadline, again.closed
                time.sleep(0.5)
        clients.append(again)
    finally:
        for c in clients:
            c.close()
        for sid in sids:
            client.delete(f"/v1/sessions/{sid}")


@pytest.fixture(scope="module")
def unlimited(live_cluster) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    """A second orchestrator on the same Redis and workers that lets 200 sockets watch one
    session: what the relays cost in Redis connections, with the limits out of the way."""
    second = Cluster(live_cluster.redis, live_cluster.data_dir,
                     {**CLUSTER_ENV, "LIVE_MAX_VIEWERS": "200", "LIVE_MAX_CLIENT_SOCKETS": "200"})
    try:
        second.start_orchestrator()
        yield second
    finally:
        second.stop()


def test_many_sockets_share_a_few_redis_connections(client, avatar_id, unlimited) -> None:  # type: ignore[no-untyped-def]
    """150 sockets on one session, all let in: all stream, on one hub reader and its pool
    (not a pooled connection each), and another session starts beside them."""
    sid = _new_session(client, avatar_id, size=256, fps=10)
    try:
        watchers, victim, held = asyncio.run(_crowd(unlimited, sid, avatar_id, SOCKETS))
    finally:
        client.delete(f"/v1/sessions/{sid}")
    streamed = [w for w in watchers if w.ready is not None and w.media > 5]
    print(f"\n{SOCKETS} sockets let in: {len(streamed)} streamed; another session ready "
          f"{victim.ready_s:.2f} s after its POST; live hub Redis connections (both "
          f"orchestrators) {held}")
    assert len(streamed) == SOCKETS, {w.closed for w in watchers if w not in streamed}
    assert held <= 2 * HUB_CONNECTIONS
    assert victim.closed is None and victim.longest_gap_s < 1.5, victim
    assert victim.ready_s < VICTIM_READY_S, victim


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_socket_that_stops_reading_is_dropped_alone(client, avatar_id, live_cluster) -> None:  # type: ignore[no-untyped-def]
    """Backpressure: a client that reads nothing is dropped with close code 4008 while the
    orchestrator's memory stays flat; the session and its other socket go on."""
    conn = redis_lib.Redis.from_url(live_cluster.redis.url)
    sid = _new_session(client, avatar_id, size=720)
    orchestrator = live_cluster.procs["orchestrator"][-1].pid
    good = LiveClient(live_cluster.url, sid)
    good.wait_event("ready")
    rss_before = _rss_mb(orchestrator)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", live_cluster.port))
    stalled = connect(live_cluster.url.replace("http://", "ws://") + f"/v1/sessions/{sid}/ws",
                      sock=sock, max_queue=1, max_size=None, ping_interval=None)
    opened = time.monotonic()
    try:
        viewers = f"ja:live:{sid}:viewers"
        deadline = time.monotonic() + 150
        said, both = 0.0, False
        while not (both and conn.zcard(viewers) == 1):  # until the stalled one is dropped
            assert time.monotonic() < deadline, "a client that reads nothing was never dropped"
            assert good.closed is None, good.closed  # the session was not ended
            both = both or conn.zcard(viewers) == 2
            if time.monotonic() - said > 4:  # speech makes the stream denser
                good.send({"type": "say", "text": "Talking to nobody. " * 6})
                said = time.monotonic()
            time.sleep(0.2)
        grown = _rss_mb(orchestrator) - rss_before
        print(f"\nthe socket that reads nothing was dropped {time.monotonic() - opened:.1f} s "
              f"after it opened; the orchestrator grew {grown:.1f} MB meanwhile")
        codes = None
        try:
            while True:
                stalled.recv(timeout=30)
        except ConnectionClosed as exc:
            codes = (exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "")
        # the session and the socket that reads go on
        assert client.get(f"/v1/sessions/{sid}").status_code == 200
        n = len(good.media())
        good.send({"type": "stop"})
        good.send({"type": "say", "text": "Still here for the others.", "id": "after"})
        good.wait_event("speech.start", timeout=30, id="after")
        assert len(good.media()) > n and good.closed is None
    finally:
        stalled.close()
        good.close()
        client.delete(f"/v1/sessions/{sid}")
    assert codes is not None and codes[0] == 4008, codes
    assert "did not read" in codes[1] or "behind" in codes[1], codes
    assert grown < 30, f"the orchestrator grew {grown:.0f} MB"
