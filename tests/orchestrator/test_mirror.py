"""Job mirrors written off the request path (shared/mirror.py): durable files, never over a
newer mirror, everything queued written at close; and in the cluster, job.json appears after
the 202 without being part of it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx

from shared.mirror import MirrorWriter, write_mirrors
from shared.models import JobOptions, JobRecord


def _rec() -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, avatar_id="a" * 32, text="Hi.", options=JobOptions(),
                     engines={"audio": "piper"})


def test_a_batch_is_written_and_never_over_a_newer_mirror(tmp_path: Path) -> None:
    recs = [_rec() for _ in range(5)]
    newer = tmp_path / "jobs" / recs[0].id / "job.json"
    newer.parent.mkdir(parents=True)
    newer.write_text('{"status": "running"}')  # a worker's transition got there first
    write_mirrors(tmp_path, recs)
    assert json.loads(newer.read_text()) == {"status": "running"}
    for rec in recs[1:]:
        stored = json.loads((tmp_path / "jobs" / rec.id / "job.json").read_text())
        assert stored["id"] == rec.id and stored["status"] == "queued"
    assert not list(tmp_path.glob("jobs/*/.job.json.*")), "temp files left"


def test_the_writer_writes_everything_queued_by_close(tmp_path: Path) -> None:
    writer = MirrorWriter(tmp_path, max_pending=3)
    recs = [_rec() for _ in range(50)]  # more than fit the queue: the rest are written inline
    for rec in recs:
        writer.submit(rec)
    writer.close()
    assert all((tmp_path / "jobs" / r.id / "job.json").is_file() for r in recs)


def test_a_submitted_job_is_mirrored_soon_after_its_202(cluster, client: httpx.Client,  # type: ignore[no-untyped-def]
                                                        avatar_id: str) -> None:
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Mirrored.",
                                         "size": 256})
    assert resp.status_code == 202
    path = cluster.data_dir / "jobs" / resp.json()["id"] / "job.json"
    deadline = time.monotonic() + 10
    while not path.is_file():
        assert time.monotonic() < deadline, "job.json was not written"
        time.sleep(0.05)
    assert json.loads(path.read_text())["id"] == resp.json()["id"]
