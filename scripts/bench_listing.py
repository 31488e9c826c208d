"""Time job listings (`JobStore.list`, what GET /v1/jobs?status= serves) at ~1,100 jobs.

Starts its own redis-server (redis.conf: AOF, appendfsync always) in a temp dir, stores N jobs
(the oldest 100 stay queued, the rest are canceled) and prints the median time of listing the
queued ones, the canceled ones and the newest 100, as JSON; `scan_all_queued_100_ms` is the
reference measured in the same run: the listing as it was before the per-status sets (read
every job, one at a time, keep those with the status).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redis_auth  # noqa: E402
from stack import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))
import redis  # noqa: E402

from shared.jobs import JobStore  # noqa: E402
from shared.models import JobOptions, JobRecord  # noqa: E402


def _median_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def _scan_all(store: JobStore, status: str, limit: int) -> list[JobRecord]:
    """The listing before per-status sets: every job read in turn, filtered by status."""
    out = []
    for raw_id in store.conn.zrevrange("ja:jobs:all", 0, -1):
        rec = store.get(raw_id.decode())
        if rec is not None and rec.status == status:
            out.append(rec)
            if len(out) >= limit:
                break
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1100)
    parser.add_argument("--queued", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="jayavatar-bench-listing-"))
    password = "bench" + "0" * 20
    acl = redis_auth.write_acl(base / "users.acl", password)
    port = 6397
    proc = subprocess.Popen(["redis-server", str(ROOT / "redis.conf"), "--port", str(port),
                             "--dir", str(base), "--aclfile", str(acl)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not redis_auth.wait(port, password, alive=lambda: proc.poll() is None):
            raise SystemExit("redis-server did not start")
        conn = redis.Redis.from_url(redis_auth.url(password, port=port))
        store = JobStore(conn, base / "data")
        t0 = time.time() - args.jobs
        for i in range(args.jobs):
            rec = JobRecord(id=f"{i:032x}", avatar_id="a" * 16, text=f"job number {i}",
                            options=JobOptions(), created_at=t0 + i)
            store.create(rec)
            if i >= args.queued:
                store.cancel(rec.id)
        report = {
            "jobs": args.jobs,
            "status_queued_100_ms": _median_ms(lambda: store.list("queued", 100), args.repeats),
            "status_canceled_100_ms": _median_ms(lambda: store.list("canceled", 100),
                                                 args.repeats),
            "newest_100_ms": _median_ms(lambda: store.list(None, 100), args.repeats),
            "scan_all_queued_100_ms": _median_ms(lambda: _scan_all(store, "queued", 100),
                                                 args.repeats),
        }
        assert len(store.list("queued", 100)) == min(args.queued, 100)
        conn.close()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
