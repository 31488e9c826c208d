"""Bodies are refused by size before they are parsed: by Content-Length before a byte is read,
and while they stream when no length is declared (chunked), for multipart and JSON bodies.

The requests are written on a raw socket, the way a hostile client would send them: a 1,000 MB
declared length whose body never comes, and chunked bodies that keep growing. The orchestrator's
temp files and memory are read from /proc while they arrive.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import Cluster

MB = 1024 * 1024
BOUNDARY = "jayavatarboundary"
# the cluster runs with MAX_UPLOAD_MB=2: a multipart body may be 2 x 2 MB + 1 MB of form
MULTIPART_LIMIT = 5 * MB
MEDIA_LIMIT = 9 * MB  # and MAX_SPEECH_UPLOAD_MB=8: /v1/media takes one recording of 8 MB + 1 MB
JSON_LIMIT = 256 * 1024


def _pid(cluster: Cluster) -> int:
    return cluster.procs["orchestrator"][-1].pid


def _temp_files(pid: int) -> dict[str, int]:
    """Files the process holds open in the temp dir (deleted ones too: the form parser's
    spool files) and their sizes."""
    tmp = os.path.realpath(tempfile.gettempdir())
    found = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if os.path.dirname(target.removesuffix(" (deleted)")) == tmp:
                found[target] = os.stat(fd).st_size
        except OSError:
            continue
    return found


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _head(cluster: Cluster, path: str, content_type: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
            f"Content-Type: {content_type}\r\n{extra}\r\n").encode()


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"connection closed before a response: {data!r}"
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(v) for k, _, v in (h.partition(": ") for h in lines[1:])
                  if k.lower() == "content-length")
    while len(rest) < length:
        part = sock.recv(65536)
        assert part, "connection closed inside the response body"
        rest += part
    return status, json.loads(rest[:length])


def _multipart_start(field: str = "portrait") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + b"\x89PNG"


def test_declared_1000_mb_upload_is_refused_before_reading(cluster: Cluster) -> None:
    pid = _pid(cluster)
    before = set((cluster.data_dir / "avatars").iterdir())
    with socket.create_connection(("127.0.0.1", cluster.port)) as sock:
        t0 = time.monotonic()
        sock.sendall(_head(cluster, "/v1/avatars",
                           f"multipart/form-data; boundary={BOUNDARY}",
                           f"Content-Length: {1000 * MB}\r\n"))
        sock.sendall(_multipart_start() + b"\x00" * 65536)  # then nothing more ever comes
        status, body = _read_response(sock, timeout=10)
        elapsed = time.monotonic() - t0
        assert _temp_files(pid) == {}
    assert status == 413 and body["error"] == "body_too_large", body
    assert "1000.0 MB" in body["message"] and "2 MB" in body["message"], body
    assert elapsed < 2.0
    assert set((cluster.data_dir / "avatars").iterdir()) == before


def test_declared_oversized_json_is_refused(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.port)) as sock:
        sock.sendall(_head(cluster, "/v1/jobs", "application/json",
                           f"Content-Length: {200 * MB}\r\n") + b'{"text": "')
        status, body = _read_response(sock, timeout=10)
    assert status == 413 and body["error"] == "body_too_large"
    assert "200.0 MB" in body["message"] and "256 KB" in body["message"], body


def _stream_chunked(cluster: Cluster, path: str, content_type: str, first: bytes,
                    total: int, watch: list[dict[str, int]]) -> tuple[int, dict, int]:
    """Send a chunked body of `total` bytes (or until the server stops it) while reading; the
    response, and how many bytes were sent before the server answered."""
    pid = _pid(cluster)
    sent = [0]
    answered = threading.Event()
    sock = socket.create_connection(("127.0.0.1", cluster.port))

    def send() -> None:
        block = b"\x00" * (64 * 1024)
        try:
            sock.sendall(_head(cluster, path, content_type, "Transfer-Encoding: chunked\r\n"))
            sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
            while sent[0] < total and not answered.is_set():
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent[0] += len(block)
                watch.append(_temp_files(pid))
                time.sleep(0.002)
        except OSError:
            pass  # the server closed the connection after its 413

    sender = threading.Thread(target=send)
    sender.start()
    try:
        status, body = _read_response(sock, timeout=30)
        answered.set()
        at = sent[0]
        sender.join()
    finally:
        sock.close()
    return status, body, at


@pytest.mark.parametrize("path,field,limit", [
    ("/v1/avatars", "portrait", MULTIPART_LIMIT),
    ("/v1/media", "file", MEDIA_LIMIT),  # a recording of speech may be larger
])
def test_chunked_multipart_upload_is_cut_off_at_the_limit(cluster: Cluster, path: str,
                                                          field: str, limit: int) -> None:
    pid = _pid(cluster)
    watch: list[dict[str, int]] = []
    status, body, sent = _stream_chunked(cluster, path,
                                         f"multipart/form-data; boundary={BOUNDARY}",
                                         _multipart_start(field), 200 * MB, watch)
    assert status == 413 and body["error"] == "body_too_large", body
    assert f"grew past {limit / MB:.1f} MB" in body["message"], body
    assert sent < 40 * MB  # the server answered near the limit, not after 200 MB
    biggest = max((size for files in watch for size in files.values()), default=0)
    assert biggest <= limit  # the form parser's spool never passed the limit
    time.sleep(0.5)
    assert _temp_files(pid) == {}


def test_chunked_json_body_is_cut_off_without_growing_memory(cluster: Cluster) -> None:
    pid = _pid(cluster)
    before = _rss(pid)
    status, body, sent = _stream_chunked(cluster, "/v1/jobs", "application/json",
                                         b'{"avatar_id": "x", "text": "', 200 * MB, [])
    assert status == 413 and body["error"] == "body_too_large", body
    assert "256 KB" in body["message"]
    assert sent < 40 * MB
    assert _rss(pid) - before < 30 * MB
