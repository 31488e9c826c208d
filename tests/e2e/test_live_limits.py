"""The live socket's frame limit (orchestrator/serving.py WS_MAX_BYTES, 1 MiB) on the real
cluster: what the live protocol sends passes, and a frame that breaks the protocol's own limits
(a message past 20,000 characters, PCM past 256 KiB) gets the relay's error event with the
session going on; a frame past 1 MiB closes the socket with 1009 (message too big) before it is
read, and 16 MiB frames leave the orchestrator's memory where it was."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from live_client import LiveClient
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.slow

KIB, MIB = 1024, 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _closed(c: LiveClient, timeout: float = 10) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while c.closed is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.closed is not None, "the socket is still open"
    return c.closed


def _send_big(c: LiveClient, size: int) -> None:
    try:
        c.send(b"\x00" * size)
    except (ConnectionClosed, OSError):
        pass  # the server closed the socket while the frame was still going out


def test_frames_the_protocol_needs_pass_and_a_larger_one_closes_with_1009(
        live_cluster, session) -> None:  # type: ignore[no-untyped-def]
    c = LiveClient(live_cluster.url, session)
    try:
        c.wait_event("ready")
        n = len(c.events("error"))
        c.send("x" * 30_000)  # past the relay's 20,000 characters: its error, not a close
        c.send(b"\x00" * (256 * KIB))  # PCM with no audio line open: the relay's error too
        c.send(b"\x00" * (MIB - 2))  # past the protocol's 256 KiB, within the socket's limit
        deadline = time.monotonic() + 10
        while len(c.events("error")) < n + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        errors = " | ".join(m["message"] for _, m in c.events("error")[n:])
        assert "30000 characters" in errors and "binary messages" in errors, errors
        assert c.closed is None
        _send_big(c, MIB + 1)
        assert _closed(c)[0] == 1009
    finally:
        c.close()


def test_16_mib_frames_leave_the_orchestrators_memory_flat(live_cluster, session) -> None:  # type: ignore[no-untyped-def]
    pid = live_cluster.procs["orchestrator"][-1].pid
    before = _rss(pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    codes = []
    try:
        for _ in range(3):
            clients = [LiveClient(live_cluster.url, session) for _ in range(3)]
            senders = [threading.Thread(target=_send_big, args=(c, 16 * MIB)) for c in clients]
            for t in senders:
                t.start()
            for t in senders:
                t.join(timeout=30)
            codes += [_closed(c)[0] for c in clients]
            for c in clients:
                c.close()
    finally:
        done.set()
        watcher.join()
    grew = (peak[0] - before) / MIB
    print(f"\n9 frames of 16 MiB: close codes {sorted(set(codes))}, orchestrator RSS "
          f"{before / MIB:.0f} MiB -> peak {peak[0] / MIB:.0f} MiB (+{grew:.1f})")
    assert set(codes) <= {1009, 1006}, codes  # 1006: the reset beat the close frame
    assert 1009 in codes
    assert grew < 16, f"the orchestrator grew by {grew:.0f} MiB"
