"""The job-file store: where every file a stage reads or writes lives, behind one interface.

Files are named by their path under DATA_DIR (shared/layout.py), so every caller keeps using
`Layout` paths; the store decides what those paths mean:

* `LocalStore` (STORE=local, the default): DATA_DIR is the store. Fetching is a look at the
  disk, pushing does nothing (the file is already in place), a folder is published by one
  rename.
* `S3Store` (STORE=s3): the files live in a bucket of any S3-compatible server (AWS S3, R2,
  MinIO, SeaweedFS), under keys equal to their paths under DATA_DIR; the local DATA_DIR holds
  only scratch (work dirs, uploads being staged) and a cache of what was fetched. A fetched file
  is checked against the size and sha256 its manifest or meta vouches for, so a stale cache
  entry is fetched again. A folder is published file by file with `last` (its manifest or
  record) last: the commit, as the rename is on a disk.

A store out of reach raises `StoreUnavailable` (a TransientError; 503 at the API): a stage
waits for the store and runs again without spending an attempt (shared/stage.py). The client
is a small SigV4 signer over http.client (stdlib): a worker host needs only its service's venv.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import os
import shutil
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from shared.errors import Busy
from shared.storage import atomic_writer, publish_dir, sha256_file

TIMEOUT_S = 10.0  # a request that gets no answer this long: the store is out of reach
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class StoreUnavailable(Busy):
    """The object store cannot be reached (or answers with a server error): a request is
    answered 503 with Retry-After, a stage waits for the store."""

    code = "store_unavailable"

    def __init__(self, message: str, *, code: str | None = None,
                 retry_after: int | None = 5) -> None:
        super().__init__(message, code=code, retry_after=retry_after)


@dataclass
class Traffic:
    """Bytes and requests that crossed the network to the store (all zero for LocalStore)."""

    sent: int = 0
    received: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, sent: int, received: int) -> None:
        with self._lock:
            self.sent += sent
            self.received += received
            self.requests += 1

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.sent, self.received, self.requests


class Store(Protocol):
    """What every backend does. `path` arguments are paths under `root` (DATA_DIR)."""

    root: Path
    remote: bool
    traffic: Traffic

    def fetch(self, path: Path, *, size: int | None = None,
              sha256: str | None = None) -> Path | None:
        """The file at `path`, on the local disk (fetched into the cache if it is remote and
        missing there or does not match `size`/`sha256`); None if the store has no such file."""
        ...

    def read_bytes(self, path: Path) -> bytes | None:
        """The file's current content (never from the cache); None if there is none."""
        ...

    def push(self, path: Path) -> None:
        """Make the local file at `path` (already written, fsynced) the store's."""
        ...

    def put_bytes(self, path: Path, data: bytes) -> None:
        """Write `data` at `path`, atomically, in the store (and the local disk)."""
        ...

    def sizes(self, folder: Path) -> dict[str, int]:
        """Name -> size of the files directly in `folder` (none: {})."""
        ...

    def folders(self, folder: Path) -> list[str]:
        """Names of the folders directly in `folder`."""
        ...

    def remove_tree(self, folder: Path) -> None:
        """Remove `folder` and everything under it, from the store and the local disk."""
        ...

    def publish_dir(self, src: Path, final: Path, last: str) -> None:
        """Make the finished local folder `src` the store's `final`, `last` written last."""
        ...

    def check(self) -> None:
        """Raise StoreUnavailable if the store cannot be reached now."""
        ...


class LocalStore:
    """DATA_DIR on this machine's disk is the store."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.traffic = Traffic()

    def fetch(self, path: Path, *, size: int | None = None,
              sha256: str | None = None) -> Path | None:
        return Path(path) if Path(path).is_file() else None

    def read_bytes(self, path: Path) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def push(self, path: Path) -> None:
        return None

    def put_bytes(self, path: Path, data: bytes) -> None:
        with atomic_writer(Path(path), "wb") as fh:
            fh.write(data)

    def sizes(self, folder: Path) -> dict[str, int]:
        try:
            return {p.name: p.stat().st_size for p in Path(folder).iterdir() if p.is_file()}
        except OSError:
            return {}

    def folders(self, folder: Path) -> list[str]:
        try:
            return sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
        except OSError:
            return []

    def remove_tree(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def publish_dir(self, src: Path, final: Path, last: str) -> None:
        publish_dir(Path(src), Path(final))

    def check(self) -> None:
        return None


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # http(s)://host[:port]
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


class S3Store:
    """An S3-compatible bucket is the store; DATA_DIR is this host's scratch and cache."""

    remote = True

    def __init__(self, root: Path, config: S3Config) -> None:
        self.root = Path(root)
        self.client = S3Client(config)
        self.traffic = self.client.traffic

    def key(self, path: Path) -> str:
        path = Path(path)
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = path.resolve().relative_to(self.root.resolve())
        return rel.as_posix()

    def fetch(self, path: Path, *, size: int | None = None,
              sha256: str | None = None) -> Path | None:
        path = Path(path)
        if path.is_file() and _matches(path, size, sha256):
            return path
        try:
            with atomic_writer(path, "wb") as fh:
                if not self.client.get(self.key(path), fh):
                    raise _NotThere
        except _NotThere:
            return None
        return path  # checked against its manifest by the caller, as a local file is

    def read_bytes(self, path: Path) -> bytes | None:
        return self.client.get_bytes(self.key(path))

    def push(self, path: Path) -> None:
        self.client.put_file(self.key(path), Path(path))

    def put_bytes(self, path: Path, data: bytes) -> None:
        with atomic_writer(Path(path), "wb") as fh:
            fh.write(data)
        self.client.put(self.key(path), data)

    def sizes(self, folder: Path) -> dict[str, int]:
        prefix = self.key(folder).rstrip("/") + "/"
        return {k[len(prefix):]: n for k, n in self.client.list(prefix, delimiter=True)}

    def folders(self, folder: Path) -> list[str]:
        prefix = self.key(folder).rstrip("/") + "/"
        return sorted(p[len(prefix):].rstrip("/") for p in self.client.prefixes(prefix))

    def remove_tree(self, folder: Path) -> None:
        prefix = self.key(folder).rstrip("/") + "/"
        for key, _ in self.client.list(prefix):
            self.client.delete(key)
        shutil.rmtree(folder, ignore_errors=True)

    def publish_dir(self, src: Path, final: Path, last: str) -> None:
        src, final = Path(src), Path(final)
        prefix = self.key(final)
        names = sorted(p.name for p in src.iterdir() if p.is_file() and p.name != last)
        if (src / last).is_file():
            self.client.delete(f"{prefix}/{last}")  # the old commit goes first
        for name in names:
            self.client.put_file(f"{prefix}/{name}", src / name)
        if (src / last).is_file():
            self.client.put_file(f"{prefix}/{last}", src / last)
        shutil.rmtree(final, ignore_errors=True)  # the cache takes the new folder
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, final)

    def check(self) -> None:
        next(self.client.list("", delimiter=True, max_keys=1), None)  # one request

    def ensure_bucket(self) -> None:
        self.client.create_bucket()


class _NotThere(Exception):
    """The store has no such file (raised inside `S3Store.fetch` only)."""


def _matches(path: Path, size: int | None, sha256: str | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_file(path) == sha256


# ---- the S3 client: SigV4 (AWS Signature Version 4) over http.client -----------------------


class S3Client:
    """Path-style requests to one bucket, one keep-alive connection per thread."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        url = urllib.parse.urlsplit(config.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"S3_ENDPOINT {config.endpoint!r} is not an http(s):// URL")
        self.https = url.scheme == "https"
        self.host = url.netloc
        self.hostname, self.port = url.hostname, url.port
        self.traffic = Traffic()
        self._local = threading.local()

    # -- operations --

    def get(self, key: str, out: IO[bytes]) -> bool:
        """Stream the object into `out`; False if there is none."""
        status, _ = self._request("GET", key, out=out)
        return status == 200

    def get_bytes(self, key: str) -> bytes | None:
        status, body = self._request("GET", key)
        return body if status == 200 else None

    def put(self, key: str, data: bytes) -> None:
        self._request("PUT", key, body=data)

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as fh:
            self._request("PUT", key, body=fh, size=os.fstat(fh.fileno()).st_size,
                          payload_sha=sha256_file(path))

    def delete(self, key: str) -> None:
        self._request("DELETE", key)

    def create_bucket(self) -> None:
        status, body = self._request("PUT", None, ok=(200, 409))
        if status == 409 and b"BucketAlreadyOwnedByYou" not in body \
                and b"BucketAlreadyExists" not in body:
            raise StoreUnavailable(f"bucket {self.config.bucket!r} cannot be created: "
                                   f"{body[:200]!r}")

    def list(self, prefix: str, *, delimiter: bool = False,
             max_keys: int = 1000) -> Iterator[tuple[str, int]]:
        """(key, size) of the objects under `prefix` (only those directly under it with
        `delimiter`)."""
        for root in self._pages(prefix, delimiter, max_keys):
            for item in root.iter(f"{_NS}Contents"):
                key = item.findtext(f"{_NS}Key", "")
                if key and not key.endswith("/"):  # not a folder marker (SeaweedFS)
                    yield key, int(item.findtext(f"{_NS}Size", "0"))

    def prefixes(self, prefix: str) -> Iterator[str]:
        """The common prefixes ("folders") directly under `prefix`."""
        for root in self._pages(prefix, True, 1000):
            for item in root.iter(f"{_NS}CommonPrefixes"):
                yield item.findtext(f"{_NS}Prefix", "")

    def _pages(self, prefix: str, delimiter: bool, max_keys: int) -> Iterator[ET.Element]:
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
            if delimiter:
                query["delimiter"] = "/"
            if token:
                query["continuation-token"] = token
            _, body = self._request("GET", None, query=query)
            root = ET.fromstring(body)
            yield root
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token or max_keys < 1000:
                return

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- transport --

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.hostname, self.port, timeout=TIMEOUT_S)
            self._local.conn = conn
        return conn

    def _request(self, method: str, key: str | None, *, query: dict[str, str] | None = None,
                 body: bytes | IO[bytes] = b"", size: int | None = None,
                 payload_sha: str | None = None, out: IO[bytes] | None = None,
                 ok: tuple[int, ...] = (200, 204)) -> tuple[int, bytes]:
        path = "/" + urllib.parse.quote(self.config.bucket, safe="")
        if key is not None:
            path += "/" + urllib.parse.quote(key, safe="/-_.~")
        qs = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted((query or {}).items()))
        if isinstance(body, bytes):
            size = len(body)
            payload_sha = hashlib.sha256(body).hexdigest()
        headers = self._sign(method, path, qs, payload_sha or "UNSIGNED-PAYLOAD", size or 0)
        target = f"{path}?{qs}" if qs else path
        status, data, received = self._send(method, target, body, headers, out)
        self.traffic.add(size or 0, received)
        if status == 404 and method in ("GET", "HEAD", "DELETE") and key is not None:
            return status, data
        if status >= 500:
            raise StoreUnavailable(f"the object store at {self.config.endpoint} answered "
                                   f"{status} to {method} {key or ''}: {data[:200]!r}")
        if status not in ok:
            raise StoreUnavailable(f"the object store refused {method} {key or ''} in bucket "
                                   f"{self.config.bucket!r} ({status}): {data[:300]!r}; check "
                                   "S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY and the bucket's "
                                   "permissions")
        return status, data

    def _send(self, method: str, target: str, body: bytes | IO[bytes], headers: dict[str, str],
              out: IO[bytes] | None) -> tuple[int, bytes, int]:
        """(status, body unless streamed to `out`, bytes received); a keep-alive connection
        the server closed is opened again once."""
        for attempt in (1, 2):
            conn = self._conn()
            try:
                if not isinstance(body, bytes):
                    body.seek(0)
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                if out is not None and resp.status == 200:
                    received = 0
                    while block := resp.read(1 << 20):
                        out.write(block)
                        received += len(block)
                    return resp.status, b"", received
                data = resp.read()
                return resp.status, data, len(data)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise StoreUnavailable(
                        f"the object store at {self.config.endpoint} cannot be reached "
                        f"({type(exc).__name__}: {exc})") from exc
        raise AssertionError("unreachable")

    def _sign(self, method: str, path: str, qs: str, payload_sha: str,
              size: int) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self.host, "x-amz-content-sha256": payload_sha,
                   "x-amz-date": stamp, "content-length": str(size)}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, qs,
                               *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                               signed, payload_sha])
        scope = f"{day}/{self.config.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        k = _hmac(f"AWS4{self.config.secret_access_key}".encode(), day)
        for part in (self.config.region, "s3", "aws4_request"):
            k = _hmac(k, part)
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.config.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}")
        return headers


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")
