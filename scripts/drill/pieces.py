"""The guarantees of overlapping stages, checked on the audit log and the data dir.

* No piece announced twice: each (job, stage, n) has at most one "piece" event. The compose
  stage's last doorbell (`n` = its segment count, rung after `end.json`, no data file) is the
  watch stream's end, not a piece: a compose resumed after that ring rings it again, which is
  counted apart.
* Every consumer read its upstream's pieces in order: within one execution the "piece-read"
  ranges from one upstream start at 0 and each starts where the last one stopped (a stage that
  waited for disk space or for the job-file store runs its handler again, from piece 0).
* A succeeded job's result has every frame the visual stage drew, and its watch stream is
  whole: `compose.pieces/` holds `init.mp4`, `end.json` and every segment it counts, each
  matching its meta, frames end to end, as many as the result.
* Pieces folders go when they should: audio.pieces/ and visual.pieces/ once the job succeeded
  (compose.pieces/ stays: the watch stream), all of them once it was canceled.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .history import Exec, Fault

STREAM = "compose.pieces"
KEPT_ON_SUCCESS = {STREAM}
CLEANUP_GRACE_S = 10.0  # a worker removes the pieces just after the job's last transition
KILL_WINDOW_S = 2.0  # a worker killed this soon after its last execution ended skipped cleanup


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def end_count(job_dir: Path) -> int | None:
    end = _read_json(job_dir / STREAM / "end.json")
    return int(end["segments"]) if isinstance(end, dict) and "segments" in end else None


def announcements(events: list[dict[str, Any]], data_dir: Path) -> dict[str, Any]:
    """Pieces announced more than once, and compose end doorbells rung again."""
    seen: dict[tuple[str, str, int], list[str]] = {}
    for ev in events:
        if ev.get("event") == "piece":
            seen.setdefault((ev["job"], ev["stage"], int(ev["n"])), []).append(ev["exec"])
    twice, rerung = [], []
    for (job, stage, n), execs in sorted(seen.items()):
        if len(execs) < 2:
            continue
        item = {"job": job, "stage": stage, "n": n, "execs": execs}
        if stage == "compose" and n == end_count(data_dir / "jobs" / job):
            rerung.append(item)
        else:
            twice.append(item)
    return {"announced": len(seen), "twice": twice, "end_rung_again": rerung}


def reads(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every "piece-read" range that does not follow the last one of its execution and
    upstream (or does not start at 0)."""
    expected: dict[tuple[str, str], int] = {}
    waited: set[str] = set()  # executions that waited (disk space, store) since their last read
    bad, n_reads = [], 0
    for ev in events:
        if ev.get("event") in ("disk-wait", "store-wait"):
            waited.add(ev["exec"])
        if ev.get("event") != "piece-read":
            continue
        n_reads += 1
        key = (ev["exec"], ev["upstream"])
        want = expected.get(key, 0)
        first, last = int(ev["first"]), int(ev["last"])
        if first == 0 and ev["exec"] in waited:  # the handler ran again after the wait
            want = 0
        waited.discard(ev["exec"])
        if first != want or last < first:
            bad.append({"job": ev["job"], "stage": ev["stage"], "upstream": ev["upstream"],
                        "exec": ev["exec"], "expected_first": want, "first": first,
                        "last": last})
        expected[key] = last + 1
    return {"reads": n_reads, "consumers": len(expected), "out_of_order": bad}


def check_stream(job_dir: Path) -> list[str]:
    """What is wrong with a succeeded job's watch stream (none expected if its result was
    made without segments)."""
    manifest = _read_json(job_dir / "compose" / "manifest.json")
    info = manifest.get("info", {}) if isinstance(manifest, dict) else {}
    visual = _read_json(job_dir / "visual" / "manifest.json")
    drawn = visual.get("info", {}).get("n_frames") if isinstance(visual, dict) else None
    if drawn is not None and info.get("n_frames") not in (None, drawn):
        return [f"result.mp4 has {info['n_frames']} frames, the visual stage drew {drawn}"]
    if "segments" not in info:
        return []
    folder = job_dir / STREAM
    count = end_count(job_dir)
    if count is None:
        return [f"{STREAM}/end.json missing or unreadable"]
    problems = []
    if count != info["segments"]:
        problems.append(f"{STREAM}: end.json counts {count} segments, the manifest "
                        f"{info['segments']}")
    init = folder / "init.mp4"
    if not init.is_file() or init.stat().st_size == 0:
        return problems + [f"{STREAM}/init.mp4 missing or empty"]
    wrong, frames, parts = _segments(folder, count)
    problems += wrong
    extra = len(list(folder.glob("seg_*.m4s"))) - count
    if extra > 0:
        problems.append(f"{STREAM}: {extra} segment(s) past the {count} end.json counts")
    if info.get("n_frames") is not None and frames != info["n_frames"]:
        problems.append(f"{STREAM}: segments cover {frames} frames, the result has "
                        f"{info['n_frames']}")
    return problems + (_probe_stream([init, *parts]) if not problems else [])


def _segments(folder: Path, count: int) -> tuple[list[str], int, list[Path]]:
    """Segments 0..count-1: (what is wrong with them, frames they cover, their files)."""
    problems: list[str] = []
    frames, parts = 0, []
    for k in range(count):
        data, meta = folder / f"seg_{k:05d}.m4s", _read_json(folder / f"seg_{k:05d}.json")
        if not isinstance(meta, dict) or not data.is_file():
            problems.append(f"{STREAM}: segment {k} missing")
            continue
        if data.stat().st_size != meta.get("size") or sha256(data) != meta.get("sha256"):
            problems.append(f"{STREAM}: segment {k} does not match its meta")
        if meta.get("start") != frames:
            problems.append(f"{STREAM}: segment {k} starts at frame {meta.get('start')}, "
                            f"expected {frames}")
        frames = int(meta.get("stop", frames))
        parts.append(data)
    return problems, frames, parts


def _probe_stream(parts: list[Path]) -> list[str]:
    """init.mp4 and the segments end to end play as one MP4 with audio and video (ffprobe)."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as fh:
        for part in parts:
            fh.write(part.read_bytes())
        fh.flush()
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type",
                                "-of", "json", fh.name], capture_output=True, text=True)
    if probe.returncode != 0:
        return [f"{STREAM}: the stream does not play: {probe.stderr.strip()[:300]}"]
    types = sorted(s.get("codec_type") for s in json.loads(probe.stdout).get("streams", []))
    return [] if types == ["audio", "video"] else [f"{STREAM}: the stream has streams {types}"]


def _left(job_dir: Path, status: str) -> list[str]:
    if status not in ("succeeded", "canceled"):
        return []
    names = sorted(p.name for p in job_dir.glob("*.pieces"))
    return [n for n in names if status == "canceled" or n not in KEPT_ON_SUCCESS]


def _killed_after_end(job: str, execs: list[Exec], faults: list[Fault]) -> bool:
    """The worker of the job's last execution was killed just after it ended: between its
    "end" line and its cleanup."""
    ended = [e for e in execs if e.job == job and e.end is not None
             and e.outcome in ("done", "skipped", "canceled")]
    if not ended:
        return False
    last = max(ended, key=lambda e: e.end or 0.0)
    return any(f.pid == last.pid and f.kind.startswith("kill-")
               and 0 <= f.t - (last.end or 0.0) <= KILL_WINDOW_S for f in faults)


def leftover_pieces(data_dir: Path, statuses: dict[str, Any], execs: list[Exec],
                    faults: list[Fault]) -> dict[str, Any]:
    """Pieces folders still there that should be gone (waiting up to CLEANUP_GRACE_S for the
    worker that ended the job to remove them), those excused by a kill right after the
    job's last execution ended, and stray temp files in the kept watch streams."""
    deadline = time.monotonic() + CLEANUP_GRACE_S
    while True:
        left = {j: n for j, s in statuses.items() if (n := _left(data_dir / "jobs" / j, s))}
        excused = {j: n for j, n in left.items() if _killed_after_end(j, execs, faults)}
        judged = {j: n for j, n in left.items() if j not in excused}
        if not judged or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stray = {}
    for job, status in statuses.items():
        if status == "succeeded":
            tmp = sorted(p.name for p in (data_dir / "jobs" / job / STREAM).glob(".*"))
            if tmp:
                stray[job] = tmp
    return {"left": judged, "left_by_a_kill_after_the_end": excused,
            "stray_temp_files_in_stream": stray}
