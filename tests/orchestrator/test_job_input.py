"""What POST /v1/jobs accepts (text, names, Idempotency-Key) and that job listings survive a bad
record already stored, against the real cluster."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from shared.models import JobOptions, JobRecord

BAD_TEXTS = {
    "lone surrogate": "Hello \\ud800 there",
    "low surrogate": "\\udfff",
    "NUL": "Hello\\u0000there",
    "bell": "ring \\u0007 ring",
    "escape": "\\u001b[31m red",
    "C1 control": "csi \\u009b here",
    "DEL": "del \\u007f",
}


def _post_raw(client, avatar_id: str, text_json: str, **headers: str):  # type: ignore[no-untyped-def]
    """POST a body whose text is given as JSON source (escapes included, as a client sends)."""
    body = f'{{"avatar_id": "{avatar_id}", "text": "{text_json}"}}'.encode()
    return client.post("/v1/jobs", content=body,
                       headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize("name", sorted(BAD_TEXTS))
def test_text_that_is_not_valid_unicode_or_has_control_characters_is_refused(
        client, avatar_id, name) -> None:  # type: ignore[no-untyped-def]
    resp = _post_raw(client, avatar_id, BAD_TEXTS[name])
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "bad_text"
    assert "U+" in body["message"] and "valid Unicode" in body["message"]
    resp.content.decode("utf-8")  # the answer itself is valid UTF-8


def test_newlines_and_tabs_are_fine(client, avatar_id) -> None:  # type: ignore[no-untyped-def]
    resp = _post_raw(client, avatar_id, "First line.\\r\\n\\tSecond line, emoji \\ud83d\\ude00.")
    assert resp.status_code == 202, resp.text
    client.post(f"/v1/jobs/{resp.json()['id']}/cancel")


@pytest.mark.parametrize("field", ["voice", "renderer", "background", "avatar_id"])
def test_names_and_options_with_control_characters_are_refused(client, avatar_id, field
                                                               ) -> None:  # type: ignore[no-untyped-def]
    body = {"avatar_id": avatar_id, "text": "Hello.", field: "piper\n\u0000"}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "invalid_request" and field in resp.json()["message"]


def _store_raw(conn: redis.Redis, fields: dict, status: str) -> str:
    job_id = uuid.uuid4().hex
    conn.hset(f"ja:job:{job_id}", mapping=fields | {"id": json.dumps(job_id)})
    conn.zadd("ja:jobs:all", {job_id: time.time()})
    conn.zadd(f"ja:jobs:status:{status}", {job_id: time.time()})
    conn.sadd("ja:jobs:active", job_id)
    return job_id


def test_listings_survive_bad_records_already_stored(client, cluster, avatar_id) -> None:  # type: ignore[no-untyped-def]
    conn = redis.Redis.from_url(cluster.redis.url)
    # A record stored before texts were checked: a lone surrogate in its text and error.
    rec = JobRecord(id="x", avatar_id=avatar_id, text="Hello \ud800 there",
                    options=JobOptions.model_validate({}), status="failed",
                    stage_state="failed", error="audio: cannot encode '\ud800'",
                    finished_at=time.time())
    surrogate = _store_raw(conn, {k: v for k, v in rec.to_hash().items() if k != "id"},
                           "failed")
    # A record damaged beyond reading: broken JSON in one field, a wrong type in another.
    damaged = _store_raw(conn, {**{k: v for k, v in rec.to_hash().items() if k != "id"},
                                "options": "{not json", "status": json.dumps("queued"),
                                "text": json.dumps("damaged record")}, "queued")
    mistyped = _store_raw(conn, {**{k: v for k, v in rec.to_hash().items() if k != "id"},
                                 "stages": json.dumps([1, 2]), "status": json.dumps("running")},
                          "running")
    try:
        for query in ("", "?status=failed", "?status=queued", "?status=running", "?limit=1000"):
            resp = client.get(f"/v1/jobs{query}")
            assert resp.status_code == 200, (query, resp.text)
        listed = {j["id"]: j for j in client.get("/v1/jobs?limit=1000").json()}
        assert listed[surrogate]["text"] == "Hello \ufffd there"
        assert any("not valid Unicode" in n for n in listed[surrogate]["notes"])
        for job_id in (damaged, mistyped):
            assert listed[job_id]["status"] == "failed"
            assert "damaged" in listed[job_id]["error"]
        assert listed[damaged]["text"] == "damaged record"

        for job_id in (surrogate, damaged, mistyped):
            resp = client.get(f"/v1/jobs/{job_id}")
            assert resp.status_code == 200, resp.text
            resp = client.post(f"/v1/jobs/{job_id}/cancel")
            assert resp.status_code == 409, resp.text  # failed: nothing to cancel
            assert "already failed" in resp.json()["message"]
            resp = client.get(f"/v1/jobs/{job_id}/events", timeout=20)  # ends: job is over
            assert resp.status_code == 200, resp.text
            assert "event: snapshot" in resp.text and '"status":"failed"' in resp.text
        assert client.get("/metrics").status_code == 200
        # The reconciler, reading the same records, keeps working for everyone else.
        job = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Still fine."})
        assert job.status_code == 202
        client.post(f"/v1/jobs/{job.json()['id']}/cancel")
        assert "reconciler: pass failed" not in (cluster.logs / "orchestrator.log").read_text()
    finally:
        for job_id in (surrogate, damaged, mistyped):
            conn.delete(f"ja:job:{job_id}")
            conn.zrem("ja:jobs:all", job_id)
            conn.srem("ja:jobs:active", job_id)
            for status in ("queued", "running", "failed"):
                conn.zrem(f"ja:jobs:status:{status}", job_id)
        conn.close()


def test_idempotency_key_with_another_body_is_refused(client, avatar_id) -> None:  # type: ignore[no-untyped-def]
    key = f"idem-{uuid.uuid4().hex[:8]}"
    first = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Only once."},
                        headers={"Idempotency-Key": key})
    assert first.status_code == 202
    job_id = first.json()["id"]
    # The same request again (defaults spelled out make no difference): the same job.
    again = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Only once.",
                                          "fps": 25}, headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.json()["id"] == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Something else."},
                        headers={"Idempotency-Key": key})
    assert other.status_code == 422, other.text
    assert other.json()["error"] == "idempotency_key_reused"
    assert job_id in other.json()["message"] and "new key" in other.json()["message"]
    client.post(f"/v1/jobs/{job_id}/cancel")


def test_idempotency_keys_expire_and_are_scoped_per_token(client, cluster, avatar_id) -> None:  # type: ignore[no-untyped-def]
    key = f"idem-{uuid.uuid4().hex[:8]}"
    body = {"avatar_id": avatar_id, "text": "Scoped."}
    ids = {}
    for who, headers in {"global": {}, "alice": {"Authorization": "Bearer alice-token"},
                         "bob": {"Authorization": "Bearer bob-token"}}.items():
        resp = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key, **headers})
        assert resp.status_code == 202, resp.text
        ids[who] = resp.json()["id"]
        again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key, **headers})
        assert again.json()["id"] == ids[who]
    assert len(set(ids.values())) == 3, "clients with different tokens share no keys"
    conn = redis.Redis.from_url(cluster.redis.url)
    names = [k.decode() for k in conn.scan_iter(f"ja:idem:*:{key}")]
    assert len(names) == 3 and not any("alice-token" in n for n in names)
    for name in names:
        assert 0 < conn.ttl(name) <= 24 * 3600  # kept a day (IDEMPOTENCY_TTL_S), then gone
    conn.close()
    for job_id in ids.values():
        client.post(f"/v1/jobs/{job_id}/cancel")
