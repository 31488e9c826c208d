"""GET /metrics: valid Prometheus text that counts what the cluster really did."""

from __future__ import annotations

import re

import httpx

# One sample line of the text format: name, optional {labels}, a number.
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*)?\})? '
                    r'(-?[0-9.]+(e[+-]?[0-9]+)?|[+-]Inf|NaN)$')
META = re.compile(r"^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
                  r"(counter|gauge|histogram|summary|untyped))$")


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert META.match(line), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(5))
    return samples


def test_metrics_after_a_job(client: httpx.Client, avatar_id: str) -> None:
    resp = client.post("/v1/jobs", json={"avatar_id": avatar_id, "text": "Count me.",
                                         "size": 256})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    from orchestrator import cli

    assert cli.watch(client, job_id, quiet=True)["status"] == "succeeded"

    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert resp.text.endswith("\n")
    m = parse(resp.text)

    assert m[("jayavatar_jobs", (("status", "succeeded"),))] >= 1
    for status in ("queued", "running", "failed", "canceled"):
        assert ("jayavatar_jobs", (("status", status),)) in m
    for stage in ("audio", "visual", "compose"):
        assert m[("jayavatar_workers", (("stage", stage),))] >= 1
        assert m[("jayavatar_queue_depth", (("stage", stage),))] >= 0
        assert m[("jayavatar_stage_retries_total", (("stage", stage),))] >= 0
        assert m[("jayavatar_stage_failures_total", (("stage", stage),))] >= 0
        count = m[("jayavatar_stage_duration_seconds_count", (("stage", stage),))]
        assert count >= 1
        assert m[("jayavatar_stage_duration_seconds_sum", (("stage", stage),))] > 0
        buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in m.items()
                          if name == "jayavatar_stage_duration_seconds_bucket"
                          and dict(labels)["stage"] == stage))
        assert buckets[-1] == (float("inf"), count)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert "# TYPE jayavatar_stage_duration_seconds histogram" in resp.text
