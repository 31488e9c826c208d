"""Every connection to the API has a deadline, and many open ones do not stop it answering
(orchestrator/serving.py): raw sockets against a real orchestrator, written the way a hostile
client would (connections that send nothing, request heads a byte at a time, a body that stalls,
a 4 MB head, thousands of idle connections).

The session cluster runs the defaults: a request head within HTTP_HEADER_TIMEOUT_S (10 s), a
kept-alive connection idle for HTTP_IDLE_TIMEOUT_S (5 s), a body within HTTP_BODY_TIMEOUT_S
(20 s) plus a second per 500 bytes, heads up to HTTP_MAX_HEADER_KB (64 KB).
"""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import CLUSTER_ENV, Cluster

HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, BODY_TIMEOUT_S = 10.0, 5.0, 20.0
SLACK_S = 3.0  # timers, a loaded machine


@pytest.fixture(scope="module", autouse=True)
def many_files() -> Iterator[None]:
    """This process opens thousands of sockets: its soft open-file limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _connect(cluster: Cluster, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _closed_at(socks: list[socket.socket], t0: float, timeout: float,
               feed: dict[socket.socket, bytes] | None = None, every_s: float = 1.0
               ) -> dict[socket.socket, float]:
    """When the server closed each socket (seconds after `t0`), watching for `timeout` s; the
    sockets in `feed` are sent their bytes every `every_s` meanwhile (a head that trickles)."""
    closed: dict[socket.socket, float] = {}
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    next_feed = time.monotonic()
    while len(closed) < len(socks) and time.monotonic() - t0 < timeout:
        if feed and time.monotonic() >= next_feed:
            _feed(feed, closed, t0)
            next_feed += every_s
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if _at_end(sock):
                closed.setdefault(sock, time.monotonic() - t0)
                sel.unregister(sock)
    sel.close()
    return closed


def _feed(feed: dict[socket.socket, bytes], closed: dict[socket.socket, float],
          t0: float) -> None:
    for sock, data in feed.items():
        if sock not in closed:
            try:
                sock.send(data)
            except OSError:
                closed[sock] = time.monotonic() - t0


def _at_end(sock: socket.socket) -> bool:
    """Whether the server closed this readable socket (after any response it sent)."""
    try:
        while sock.recv(65536):
            pass  # a response (the 431, an idle one's) before the close
    except BlockingIOError:
        return False
    except OSError:
        pass  # reset: closed as well
    return True


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def test_connections_that_send_nothing_are_closed_within_the_header_timeout(
        cluster: Cluster) -> None:
    t0 = time.monotonic()
    socks = _connect(cluster, 500)
    try:
        closed = _closed_at(socks, t0, HEADER_TIMEOUT_S + SLACK_S + 2)
    finally:
        _close_all(socks)
    times = sorted(closed.values()) or [float("nan")]
    print(f"\n500 idle connections: {len(closed)} closed, the last after {times[-1]:.1f} s")
    assert len(closed) == 500, f"{500 - len(closed)} idle connections still open"
    assert times[0] >= HEADER_TIMEOUT_S - 1 and times[-1] <= HEADER_TIMEOUT_S + SLACK_S


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout(cluster: Cluster) -> None:
    """Slowloris: each connection sends a header line every second and never ends its head."""
    t0 = time.monotonic()
    socks = _connect(cluster, 200)
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n".encode()
    for sock in socks:
        sock.send(head)
    try:
        closed = _closed_at(socks, t0, HEADER_TIMEOUT_S + SLACK_S + 2,
                            feed=dict.fromkeys(socks, b"X-Slow: 1\r\n"))
    finally:
        _close_all(socks)
    print(f"\n200 slowloris connections: {len(closed)} closed, the last after "
          f"{max(closed.values(), default=float('nan')):.1f} s")
    assert len(closed) == 200, f"{200 - len(closed)} trickling heads still open"
    assert max(closed.values()) <= HEADER_TIMEOUT_S + SLACK_S


def test_a_kept_alive_connection_closes_after_the_idle_timeout(cluster: Cluster) -> None:
    sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    sock.setblocking(False)
    closed = _closed_at([sock], t0, IDLE_TIMEOUT_S + SLACK_S + 2)
    sock.close()
    assert closed and IDLE_TIMEOUT_S - 1 <= closed[sock] <= IDLE_TIMEOUT_S + SLACK_S, closed


def test_a_body_that_stalls_is_cut_at_the_body_timeout(cluster: Cluster) -> None:
    sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
    sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
                 '{"avatar_id": "'.encode())
    t0 = time.monotonic()
    sock.setblocking(False)
    # a byte every 2 s: far under 500 bytes a second
    closed = _closed_at([sock], t0, BODY_TIMEOUT_S + SLACK_S + 3, feed={sock: b"a"}, every_s=2)
    sock.close()
    assert closed, "a stalled body was held past the body timeout"
    assert BODY_TIMEOUT_S - 1 <= closed[sock] <= BODY_TIMEOUT_S + SLACK_S, closed


def test_a_4_mb_header_block_is_refused_with_431(cluster: Cluster) -> None:
    sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n".encode()
    sent = 0
    try:
        sock.sendall(head)
        while sent < 4 * 1024 * 1024:
            sock.sendall(line * 64)
            sent += len(line) * 64
        sock.sendall(b"\r\n")
    except OSError:
        pass  # the server refused and closed before the rest was sent
    reply = b""
    try:
        while part := sock.recv(65536):
            reply += part
    except OSError:
        pass
    sock.close()
    print(f"\n4 MB head: {sent / 1024:.0f} KB sent before the server closed; reply "
          f"{reply[:40]!r}")
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert b'"error": "headers_too_large"' in reply and b"64 KB" in reply
    assert sent < 4 * 1024 * 1024, "the server read the whole 4 MB head"


def test_healthz_answers_within_1_s_while_1500_connections_sit_idle(cluster: Cluster) -> None:
    socks = _connect(cluster, 1500)
    try:
        took = []
        with httpx.Client(base_url=cluster.url, timeout=10) as client:
            for _ in range(5):
                t0 = time.monotonic()
                assert client.get("/healthz").status_code == 200
                took.append(time.monotonic() - t0)
                time.sleep(0.5)
    finally:
        _close_all(socks)
    print(f"\n/healthz with 1,500 idle connections open: {max(took) * 1000:.0f} ms at most")
    assert max(took) < 1.0


@pytest.fixture(scope="module")
def capped(cluster: Cluster) -> Iterator[Cluster]:
    """A second orchestrator that holds at most 300 connections (HTTP_MAX_CONNECTIONS)."""
    second = Cluster(cluster.redis, cluster.data_dir,
                     {**CLUSTER_ENV, "HTTP_MAX_CONNECTIONS": "300", "RUN_RECONCILER": "false"})
    try:
        second.start_orchestrator()
        yield second
    finally:
        second.stop()


def test_past_the_connection_limit_the_longest_idle_are_closed_and_healthz_answers(
        capped: Cluster) -> None:
    socks = _connect(capped, 1000)
    try:
        t0 = time.monotonic()
        with httpx.Client(base_url=capped.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
        took = time.monotonic() - t0
        closed = _closed_at(socks, time.monotonic(), 2)
    finally:
        _close_all(socks)
    print(f"\n1,000 connections to a server that holds 300: {len(closed)} closed at once, "
          f"/healthz in {took * 1000:.0f} ms")
    assert took < 1.0
    assert len(closed) >= 1000 - 300
    assert all(s in closed for s in socks[:600]), "the longest waiting were not the ones closed"


def test_a_request_head_arriving_in_pieces_within_the_timeout_is_served(cluster: Cluster) -> None:
    """The deadline is on the whole head, not on each byte: a slow but honest client is served."""
    sock = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n\r\n".encode()
    done = threading.Event()

    def trickle() -> None:
        for i in range(0, len(head), 8):
            sock.send(head[i:i + 8])
            time.sleep(0.2)
        done.set()

    sender = threading.Thread(target=trickle)
    sender.start()
    reply = sock.recv(65536)
    sender.join()
    sock.close()
    assert done.is_set() and reply.startswith(b"HTTP/1.1 200"), reply[:100]
