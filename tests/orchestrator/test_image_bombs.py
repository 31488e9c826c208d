"""Memory bombs through small images: 20 parallel 8192x8192 all-zero PNGs (~200 KB each on the
wire, 201 MB each decoded) against a real orchestrator process, its RSS read from /proc.

The orchestrator runs alone (its own Redis, no workers) so nothing else moves its memory:
avatar uploads are decoded and staged, then give up waiting for a visual worker after
ANALYZE_TIMEOUT_S; background-image uploads are decoded and stored.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Cluster, RedisServer

pytestmark = pytest.mark.slow

SIDE, PARALLEL = 8192, 20
MB = 1024 * 1024
RSS_CEILING = 8 * 1024 * MB  # the sampler stops a runaway orchestrator before it hurts the box


def zero_png(width: int, height: int) -> bytes:
    """An all-black RGB PNG, compressed row by row (a decompression bomb ~1000:1)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="module")
def lone_orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = RedisServer(tmp_path_factory.mktemp("bomb-redis"))
    server.start()
    cluster = Cluster(server, tmp_path_factory.mktemp("bomb-data"),
                      {"LOG_LEVEL": "WARNING", "ANALYZE_TIMEOUT_S": "4", "MAX_UPLOAD_MB": "2"})
    try:
        cluster.start_orchestrator()
        yield cluster
    finally:
        cluster.stop()
        server.kill()


def test_parallel_png_bombs_stay_bounded_and_memory_returns(lone_orchestrator: Cluster) -> None:
    cluster = lone_orchestrator
    pid = cluster.procs["orchestrator"][-1].pid
    bomb = zero_png(SIDE, SIDE)
    assert len(bomb) < 400 * 1024
    with httpx.Client(base_url=cluster.url, timeout=60) as c:  # warm: imports, first decode
        small = zero_png(640, 480)
        assert c.post("/v1/media", data={"kind": "image"},
                      files={"file": ("warm.png", small)}).status_code == 201
    time.sleep(1.0)
    baseline = rss(pid)
    peak = [baseline]
    done, killed = threading.Event(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            value = rss(pid)
            peak[0] = max(peak[0], value)
            if value > RSS_CEILING:
                killed.set()
                cluster.procs["orchestrator"][-1].kill()
                return
            time.sleep(0.01)

    statuses: list[int] = []
    lock = threading.Lock()

    def upload(k: int) -> None:
        with httpx.Client(base_url=cluster.url, timeout=300) as c:
            try:
                if k % 2:
                    r = c.post("/v1/media", data={"kind": "image"},
                               files={"file": ("b.png", bomb)})
                else:
                    r = c.post("/v1/avatars", files={"portrait": ("b.png", bomb)})
                status = r.status_code
            except httpx.TransportError:
                status = -1  # the sampler stopped the orchestrator
            with lock:
                statuses.append(status)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=upload, args=(k,)) for k in range(PARALLEL)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    time.sleep(2.0)
    done.set()
    sampler.join()
    assert not killed.is_set(), (f"the orchestrator passed {RSS_CEILING / MB:.0f} MB "
                                 f"(baseline {baseline / MB:.0f} MB) and was stopped")
    after = rss(pid)
    print(f"\nRSS baseline {baseline / MB:.0f} MB, peak {peak[0] / MB:.0f} MB "
          f"(+{(peak[0] - baseline) / MB:.0f}), after {after / MB:.0f} MB "
          f"(+{(after - baseline) / MB:.0f}); {PARALLEL} bombs in {elapsed:.1f} s; "
          f"statuses {sorted(statuses)}")
    assert peak[0] - baseline < 500 * MB
    assert after - baseline < 50 * MB
    # the background images were decoded (reduced) and stored; the portraits were decoded and
    # staged, then waited for a visual worker there is none of
    assert sorted(statuses) == [201] * (PARALLEL // 2) + [503] * (PARALLEL // 2), statuses
    stored = [p for p in (cluster.data_dir / "media").iterdir() if not p.name.startswith(".")]
    assert len(stored) == PARALLEL // 2 + 1  # and the warm-up image
    assert [p.name for p in (cluster.data_dir / "avatars").iterdir()] == []
