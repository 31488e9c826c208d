"""The job-file store (shared/store.py) against a real S3 server: SeaweedFS from .venvs/store,
its one identity limited to one bucket. Two "hosts" are two DATA_DIRs (scratch and cache) on
the same bucket: what one publishes, the other reads through the store only."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import launcher

from shared.checkpoint import MANIFEST, load_manifest, publish, write_manifest
from shared.errors import ConfigError
from shared.layout import Layout
from shared.pieces import PieceFiles
from shared.settings import Settings
from shared.store import LocalStore, S3Config, S3Store, StoreUnavailable

FIELDS = {"stage": "visual", "job_id": "j", "engine": "e", "engine_version": "1",
          "input_hash": "h1", "execution_id": "x"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not launcher.WEED.is_file():
        pytest.fail(f"{launcher.WEED} is missing: run `make .venvs/store/.installed`")
    folder = tmp_path_factory.mktemp("store")
    store = launcher.ObjectStore.create(folder)
    procs = launcher.Processes(launcher.env_with(), folder / "logs")
    procs.start("store", store.command())
    try:
        store.wait(lambda: procs.alive("store"), procs.log_of("store"))
        yield store
    finally:
        procs.stop()


def _s3(server: Any, root: Path, **changes: str) -> S3Store:
    fields = {"endpoint": server.endpoint, "bucket": launcher.BUCKET,
              "access_key_id": server.access_key, "secret_access_key": server.secret_key,
              **changes}
    return S3Store(root, S3Config(**fields))


@pytest.fixture
def hosts(server: Any, tmp_path: Path) -> Iterator[tuple[S3Store, S3Store]]:
    """Two hosts' stores; each test works under its own jobs/<tmp name>/ prefix."""
    a, b = _s3(server, tmp_path / "a"), _s3(server, tmp_path / "b")
    yield a, b
    for store in (a, b):
        store.client.close()


def _job(root: Path, tmp_path: Path) -> Path:
    return root / "jobs" / tmp_path.name


def test_files_cross_from_one_host_to_the_other(hosts: tuple[S3Store, S3Store],
                                                 tmp_path: Path) -> None:
    a, b = hosts
    data = bytes(range(256)) * 4096  # 1 MiB
    a.put_bytes(_job(a.root, tmp_path) / "x" / "blob.bin", data)
    assert b.read_bytes(_job(b.root, tmp_path) / "x" / "blob.bin") == data
    got = b.fetch(_job(b.root, tmp_path) / "x" / "blob.bin",
                  sha256=hashlib.sha256(data).hexdigest())
    assert got == _job(b.root, tmp_path) / "x" / "blob.bin" and got.read_bytes() == data
    assert b.fetch(_job(b.root, tmp_path) / "x" / "none") is None
    assert not (_job(b.root, tmp_path) / "x" / "none").exists()  # no temp file left
    assert b.sizes(_job(b.root, tmp_path) / "x") == {"blob.bin": len(data)}
    assert b.folders(_job(b.root, tmp_path)) == ["x"]
    b.remove_tree(_job(b.root, tmp_path) / "x")
    assert a.read_bytes(_job(a.root, tmp_path) / "x" / "blob.bin") is None
    assert a.traffic.sent >= len(data) and b.traffic.received >= 2 * len(data)


def test_a_stale_cache_entry_is_fetched_again(hosts: tuple[S3Store, S3Store],
                                              tmp_path: Path) -> None:
    a, b = hosts
    path_b = _job(b.root, tmp_path) / "f.bin"
    a.put_bytes(_job(a.root, tmp_path) / "f.bin", b"new content")
    path_b.parent.mkdir(parents=True)
    path_b.write_bytes(b"old content")  # same size, other bytes
    sha = hashlib.sha256(b"new content").hexdigest()
    assert b.fetch(path_b, size=11).read_bytes() == b"old content"  # type: ignore[union-attr]
    assert b.fetch(path_b, sha256=sha).read_bytes() == b"new content"  # type: ignore[union-attr]


def test_a_published_stage_is_read_whole_on_the_other_host(hosts: tuple[S3Store, S3Store],
                                                           tmp_path: Path) -> None:
    a, b = hosts
    work = a.root / "scratch" / "visual.tmp-1"
    work.mkdir(parents=True)
    (work / "video.mp4").write_bytes(b"v" * 300_000)
    write_manifest(work, FIELDS, ["video.mp4"])
    final_a, final_b = _job(a.root, tmp_path) / "visual", _job(b.root, tmp_path) / "visual"
    assert load_manifest(final_b, store=b) is None
    assert publish(work, final_a, a)
    manifest = load_manifest(final_b, store=b)
    assert manifest is not None and manifest.input_hash == "h1"
    assert (final_b / "video.mp4").read_bytes() == b"v" * 300_000  # fetched into b's cache
    # a twin made from the same input does not publish again
    twin = a.root / "scratch" / "visual.tmp-2"
    twin.mkdir()
    (twin / "video.mp4").write_bytes(b"w" * 10)
    write_manifest(twin, FIELDS, ["video.mp4"])
    assert not publish(twin, final_a, a)
    # a file damaged in the store: the stage's output is not vouched for
    a.client.put(a.key(final_a / "video.mp4"), b"x" * 300_000)
    (final_b / "video.mp4").unlink()
    assert load_manifest(final_b, store=b) is None
    assert load_manifest(final_b, store=b, verify=False, fetch=False) is not None  # sizes
    keys = b.sizes(final_b)
    assert set(keys) == {"video.mp4", MANIFEST}


def test_pieces_published_on_one_host_are_read_on_the_other(hosts: tuple[S3Store, S3Store],
                                                            tmp_path: Path) -> None:
    a, b = hosts
    layout_a, layout_b = Layout(a.root, a), Layout(b.root, b)
    writer = PieceFiles.of(layout_a, tmp_path.name, "compose")
    reader = PieceFiles.of(layout_b, tmp_path.name, "compose")
    writer.folder.mkdir(parents=True)
    assert reader.read(0) is None and not reader.published(0) and reader.end() is None
    tmp = writer.temp(0, "exec1")
    tmp.write_bytes(b"moof" * 1000)
    writer.write(0, tmp, {"start": 0, "stop": 25})
    writer.write_init(b"ftypmoov")
    assert writer.write_end(1) and not writer.write_end(1)
    piece = reader.read(0)
    assert piece is not None and piece.meta["stop"] == 25
    assert piece.path.read_bytes() == b"moof" * 1000
    assert reader.read_bytes(0) == b"moof" * 1000
    assert reader.init_bytes() == b"ftypmoov" and reader.end() == 1


def test_refusals_and_outages_say_what_to_check(server: Any, tmp_path: Path) -> None:
    wrong = _s3(server, tmp_path, secret_access_key="not-the-secret")
    with pytest.raises(StoreUnavailable, match="S3_SECRET_ACCESS_KEY"):
        wrong.read_bytes(tmp_path / "jobs" / "x")
    other = _s3(server, tmp_path, bucket="not-ours")  # the identity may use one bucket only
    with pytest.raises(StoreUnavailable, match="refused"):
        other.ensure_bucket()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = _s3(server, tmp_path, endpoint=f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot be reached") as err:
        down.check()
    assert time.monotonic() - t0 < 5 and err.value.retry_after == 5
    for store in (wrong, other, down):
        store.client.close()


def test_the_local_store_is_data_dir(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes(tmp_path / "media" / "m1" / "media.json", b"{}")
    assert store.read_bytes(tmp_path / "media" / "m1" / "media.json") == b"{}"
    assert store.fetch(tmp_path / "media" / "m1" / "media.json") is not None
    assert store.folders(tmp_path / "media") == ["m1"]
    staging = tmp_path / "media" / ".staging-m2"
    staging.mkdir()
    (staging / "a.bin").write_bytes(b"a")
    store.publish_dir(staging, tmp_path / "media" / "m2", "a.bin")
    assert store.sizes(tmp_path / "media" / "m2") == {"a.bin": 1}
    store.remove_tree(tmp_path / "media")
    assert not (tmp_path / "media").exists() and store.traffic.requests == 0


def test_settings_name_what_an_s3_store_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE", "s3")
    monkeypatch.setenv("S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("S3_BUCKET", raising=False)
    with pytest.raises(ConfigError, match="STORE=s3 needs S3_BUCKET"):
        Settings.load()
    monkeypatch.setenv("S3_BUCKET", "b")
    monkeypatch.setenv("S3_ENDPOINT", "s3.example.com/path")
    with pytest.raises(ConfigError, match="S3_ENDPOINT 's3.example.com/path' must be"):
        Settings.load()
    monkeypatch.setenv("S3_ENDPOINT", "https://s3.example.com")
    settings = Settings.load()
    assert settings.layout.store.remote and isinstance(settings.layout.store, S3Store)
    assert "s3_secret_access_key" not in repr(settings)
    monkeypatch.setenv("STORE", "nfs")
    with pytest.raises(ConfigError, match="STORE"):
        Settings.load()
