"""The drill's command line and its run: cluster up, generator and nemesis at work, wait for
every job to end, check, report."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from launcher import ROOT, STAGES

from . import __doc__ as DRILL_DOC
from .checker import Report, check, summary
from .cluster import Cluster
from .generator import Generator
from .history import TERMINAL, History
from .nemesis import HOST_KINDS, KINDS, Nemesis
from .spread import SpreadCluster


def log(msg: str) -> None:
    sys.stderr.write(f"[drill {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


class Drill:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="jayavatar-drill-"))
        audit_path = self.base / "audit.jsonl"
        env = {"LEASE_TTL_S": str(args.lease_ttl), "RECONCILE_EVERY_S": str(args.reconcile_every),
               "RETRY_BACKOFF_S": "0.5", "MAX_ATTEMPTS": str(args.max_attempts),
               "CHUNK_FRAMES": "25", "AUDIT_LOG": str(audit_path), "LOG_LEVEL": "INFO",
               "ANALYZE_TIMEOUT_S": "120", "MIN_FREE_MB": str(args.min_free_mb)}
        workers = {"audio": args.audio_workers, "visual": args.visual_workers,
                   "compose": args.compose_workers}
        self.cluster: Cluster
        if args.hosts:
            self.cluster = SpreadCluster(self.base, env, workers, args.hosts,
                                         disk_mb=args.disk_mb)
        else:
            self.cluster = Cluster(self.base, env, workers, disk_mb=args.disk_mb)
        self.history = History(audit_path)
        self.rconn = redis.Redis.from_url(self.cluster.redis_url, socket_timeout=1,
                                          socket_connect_timeout=1)
        self.generator: Generator | None = None
        self.nemesis = Nemesis(args, self.cluster, self.history, self.job_field, self.queue_len,
                               self.submitting, log)

    # -- what the generator and the nemesis ask about the cluster ---------------------------

    def job_field(self, job_id: str, name: str) -> Any:
        try:
            raw = self.rconn.hget(f"ja:job:{job_id}", name)
        except redis.RedisError:
            return None
        return json.loads(raw) if raw else None

    def queue_len(self, stage: str) -> int:
        """Executions of `stage` waiting, in every lane."""
        try:
            return sum(int(self.rconn.llen(f"rq:queue:{q}")) for q in STAGES[stage].queues)
        except redis.RedisError:
            return 0

    def in_flight(self) -> int:
        """Accepted jobs not terminal yet (as far as Redis says)."""
        return sum(1 for j in self.history.job_ids()
                   if self.job_field(j, "status") not in TERMINAL)

    def submitting(self) -> bool:
        return self.generator is not None and self.generator.submitting

    # -- the run ----------------------------------------------------------------------------

    def start(self) -> str:
        """Bring the cluster up and create the drill's avatar; its id."""
        c = self.cluster
        log(f"temp dir {self.base}; redis :{c.redis_port}, API :{c.api_port}")
        c.start_redis()
        c.start_orchestrator()
        for name in c.worker_names:
            c.start_worker(name)
        c.wait_api()
        c.wait_workers()
        portrait = (ROOT / "assets" / "sample_portrait.png").read_bytes()
        resp = httpx.post(f"{c.api_url}/v1/avatars", timeout=180, headers=c.api_headers,
                          files={"portrait": ("portrait.png", portrait, "image/png")})
        if resp.status_code != 201:
            raise RuntimeError(f"avatar creation failed: {resp.status_code} {resp.text}")
        avatar_id: str = resp.json()["id"]
        log(f"cluster up ({', '.join(c.worker_names)}); avatar {avatar_id}")
        return avatar_id

    def run(self) -> Report:
        t_start = time.time()
        avatar_id = self.start()
        gen = self.generator = Generator(
            self.args, self.cluster.api_url, avatar_id, self.history, log,
            faults_landed=lambda: len(self.history.faults),
            faults_done=lambda: self.nemesis.done, in_flight=self.in_flight,
            redis_up=lambda: self.cluster.alive("redis"), headers=self.cluster.api_headers)
        sub = threading.Thread(target=gen.run, name="generator", daemon=True)
        sub.start()
        self.nemesis.run()
        log("all faults injected and every process is back; waiting for the jobs")
        self.wait_terminal(time.monotonic() + self.args.timeout)
        gen.stop.set()
        sub.join(timeout=20)
        self.history.close_submissions()
        t_end = time.time()
        c = self.cluster
        extra = {"workers": c.worker_names, "small_disk": c.disk_note, "temp_dir": str(self.base),
                 "redis_restarts": c.supervisor.services["redis"].restarts}
        if isinstance(c, SpreadCluster):
            extra["hosts"] = c.note
        statuses = {j: r.get("status") for j, r in self.history.records.items()}
        return check(self.history, self.args, c.results_dir(statuses), self.orphans(), extra,
                     t_start, t_end)

    def wait_terminal(self, deadline: float) -> None:
        """Poll every accepted job until all are terminal and the generator is done (or the
        deadline passes); the records land in the history."""
        self.cluster.wait_api(timeout=60)
        records = self.history.records
        assert self.generator is not None
        with httpx.Client(base_url=self.cluster.api_url, timeout=15,
                          headers=self.cluster.api_headers) as client:
            while True:
                self.nemesis.tick()
                pending = [j for j in self.history.job_ids()
                           if records.get(j, {}).get("status") not in TERMINAL]
                for job_id in pending:
                    try:
                        resp = client.get(f"/v1/jobs/{job_id}")
                        records[job_id] = (resp.json() if resp.status_code == 200
                                           else {"status": f"http {resp.status_code}"})
                    except httpx.HTTPError as exc:
                        records[job_id] = {"status": f"unreachable: {exc}"}
                pending = [j for j in pending if records[j].get("status") not in TERMINAL]
                if not pending and self.generator.done.is_set():
                    return
                if time.monotonic() > deadline:
                    log(f"timeout: {len(pending)} job(s) not terminal")
                    return
                time.sleep(1.0)

    def orphans(self) -> list[str]:
        """Jobs in Redis that no 202 told us about."""
        known = set(self.history.job_ids())
        try:
            ids = self.rconn.zrange("ja:jobs:all", 0, -1)
        except redis.RedisError:
            return []
        return [i.decode() for i in ids if i.decode() not in known]  # type: ignore[union-attr]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="drill", description=(DRILL_DOC or "").splitlines()[0])
    p.add_argument("--jobs", type=int, default=20,
                   help="jobs to submit at least (more follow while faults wait for work)")
    p.add_argument("--faults", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds to wait, after the last fault, for every job to end")
    p.add_argument("--lease-ttl", type=float, default=3.0)
    p.add_argument("--reconcile-every", type=float, default=0.5)
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--fault-gap", type=float, default=1.5, help="mean seconds between faults")
    p.add_argument("--submit-gap", type=float, default=1.0, help="mean seconds between jobs")
    p.add_argument("--aim-s", type=float, default=12.0,
                   help="how long a fault waits for its aimed phase before taking any running "
                        "work of its kind")
    p.add_argument("--size", type=int, default=512, help="video size of the drill's jobs")
    p.add_argument("--audio-workers", type=int, default=1)
    p.add_argument("--visual-workers", type=int, default=2)
    p.add_argument("--compose-workers", type=int, default=1)
    p.add_argument("--kinds", default=None,
                   help=f"comma-separated fault kinds to draw from (default: all; "
                        f"{', '.join(HOST_KINDS)} only with --hosts): {', '.join(KINDS)}")
    p.add_argument("--hosts", type=int, default=0,
                   help="spread the cluster over this many hosts (network namespaces; root): "
                        "Redis, the store and the API on one, the workers dealt out over the "
                        "others; needs --store s3. 0: everything on this machine")
    p.add_argument("--store", choices=("local", "s3"), default="local",
                   help="where job files live: local (DATA_DIR) or s3 (SeaweedFS on the main "
                        "host; needs --hosts)")
    p.add_argument("--overlap-share", type=float, default=1 / 3,
                   help="share of the faults (of every kind) that wait for two stages of one "
                        "job running at once and strike one of them")
    p.add_argument("--stop-stages", default="audio,visual,compose",
                   help="stages whose workers stop-worker may freeze")
    p.add_argument("--keep", action="store_true", help="keep the temp dir even on success")
    p.add_argument("--disk-mb", type=int, default=1024,
                   help="size of the tmpfs holding DATA_DIR and Redis (fill-disk faults); 0: off")
    p.add_argument("--min-free-mb", type=float, default=64.0,
                   help="MIN_FREE_MB of the drill's cluster")
    args = p.parse_args(argv)
    if (args.store == "s3") != bool(args.hosts):
        p.error("--hosts and --store s3 go together: workers on other hosts share no disk, "
                "so their files live in the store (e.g. --hosts 3 --store s3)")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        drill = Drill(args)
    except RuntimeError as exc:
        log(f"the drill cannot start: {exc}")
        return 2
    if args.hosts:  # SIGTERM too ends the run through the cleanup below (hosts, links)
        signal.signal(signal.SIGTERM, _interrupt)
    report: Report | None = None
    try:
        report = drill.run()
    except (RuntimeError, KeyboardInterrupt) as exc:
        log(f"drill aborted: {exc!r}")
    finally:
        if args.hosts:  # a second Ctrl-C must not leave namespaces behind
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        drill.cluster.stop(keep_data=report is None or not report["ok"] or args.keep)
        drill.rconn.close()
    if report is None:
        log(f"evidence kept in {drill.base}")
        return 2
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2, default=str))
    print(summary(report))
    if report["ok"] and not args.keep:
        shutil.rmtree(drill.base, ignore_errors=True)
    else:
        print(f"evidence: {drill.base} (audit.jsonl, logs/, data/)")
    return 0 if report["ok"] else 1
