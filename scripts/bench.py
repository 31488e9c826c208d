"""`make bench`: end-to-end speed and memory of the default engines, measured on a real cluster.

Starts its own Redis + orchestrator + one worker per stage, warms them up with one job, then runs
jobs of about 10 s of speech at 512x512/25 fps one after another and reports, per job and as
medians: wall time from submission to result, real-time factor (wall / speech seconds), each
stage's own time (from its manifest), stage hand-off latency (a stage's end to the next stage's
start, from the job record), and each worker's peak RSS (VmHWM). Then it measures how many
submissions per second the API accepts from 50 concurrent clients (1,000 by default), with the
workers running, and the CPU each process spends per submission. Writes a JSON report.

The other modes (--overlap, --recording, --baseline, --api-only) and the pieces they share are
the bench_*.py modules beside this one: bench_jobs (texts, one job, per-job figures),
bench_api, bench_baseline, bench_overlap, bench_recording, bench_procs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import api_rates, submissions_per_second  # noqa: E402
from bench_baseline import job_baseline  # noqa: E402
from bench_jobs import TEXT_10S, job_rows, run_job, start_with_avatar  # noqa: E402
from bench_overlap import overlap_compare  # noqa: E402
from bench_procs import peak_rss_mb  # noqa: E402
from bench_recording import recording_compare  # noqa: E402
from stack import Stack, log  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--text", default=TEXT_10S)
    parser.add_argument("--report", type=Path, default=Path("out/bench.json"))
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50, help="concurrent API clients")
    parser.add_argument("--api-only", action="store_true",
                        help="only the API submission rate (workers running, no timed jobs)")
    parser.add_argument("--api-baseline", metavar="COMMIT",
                        help="with --api-only: also measure that commit's cluster, in turns")
    parser.add_argument("--api-workers", type=int, default=4,
                        help="API_WORKERS of this tree's orchestrator in the API measurement")
    parser.add_argument("--api-rounds", type=int, default=1,
                        help="turns of the API measurement (each submits --submissions jobs)")
    parser.add_argument("--recording", action="store_true",
                        help="a 60 s text job against jobs from the same speech uploaded as a "
                             "recording, with and without its transcript, in turns")
    parser.add_argument("--overlap", action="store_true",
                        help="only the timed jobs (10 s and 60 s), with overlapping and with "
                             "sequential stages, in turns: first segment, wall ratio, hand-offs")
    parser.add_argument("--backlog", type=int, default=6,
                        help="with --overlap: jobs submitted at once, timed until the last ends")
    parser.add_argument("--backlog-turns", type=int, default=2,
                        help="with --overlap: rounds of --backlog jobs per mode (0: none)")
    parser.add_argument("--baseline", metavar="COMMIT",
                        help="only the timed jobs, on this tree and on that commit's cluster, "
                             "in turns (wall-time ratio)")
    args = parser.parse_args()

    if args.recording:
        summary = recording_compare(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=2))
        log(f"{summary['speech_s']:.1f} s of speech: wall {summary['wall_s_median']}, ratio to "
            f"text {summary['wall_ratio_to_text']} (per turn "
            f"{summary['wall_ratio_to_text_per_turn']}); audio stage x real time "
            f"{summary['audio_stage_x_realtime']}")
        return 0
    if args.overlap:
        summary = overlap_compare(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=2))
        for label in ("10s", "60s"):
            log(f"{label}: wall overlap/sequential {summary[f'wall_ratio_{label}']} (per turn "
                f"{summary[f'wall_ratio_{label}_per_turn']}); first segment p50 "
                f"{summary['overlap'][label]['median']['first_segment_s_p50']} s vs "
                f"{summary['sequential'][label]['median']['first_segment_s_p50']} s")
        if "backlog" in summary:
            log(f"{args.backlog} 10 s jobs at once, until the last ends: {summary['backlog']}")
        log(f"piece hand-off (overlap): {summary['overlap']['piece_handoff_ms']}")
        log(f"peak RSS (MB): {summary['peak_rss_mb']}")
        return 0
    if args.baseline:
        summary = job_baseline(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=2))
        log(f"wall time, this tree / {args.baseline}: {summary['wall_ratio']} "
            f"(per turn {summary['wall_ratio_per_turn']})")
        return 0
    if args.api_only:
        load = api_rates(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"api_submissions": load}, indent=2))
        log(f"API: { {k: v for k, v in load.items() if k != 'runs'} }")
        return 0

    data_dir = Path(tempfile.mkdtemp(prefix="jayavatar-bench-"))
    stack = Stack(data_dir, 6393, 8793, data_dir / "logs")
    stack.env["API_WORKERS"] = str(args.api_workers)
    results: list[dict] = []
    try:
        avatar_id = start_with_avatar(stack)
        for _ in range(args.jobs):
            results.append(run_job(stack.client, avatar_id, args.text))
        rss = {name: round(peak_rss_mb(p.pid), 1) for name, p in stack.procs.items()}
        # RSS is read before the load test, so it is that of the measured jobs; the load's
        # jobs are only enqueued and are dropped with the stack.
        load = submissions_per_second(stack.api_url, avatar_id, args.submissions,
                                      args.clients, {n: p.pid for n, p in stack.procs.items()})
    finally:
        stack.stop()
    rows, med = job_rows(data_dir, results)
    report = {"jobs": rows, "median": med, "peak_rss_mb": rss, "api_submissions": load}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    log(json.dumps(report["median"]))
    log(f"peak RSS (MB): {rss}")
    log(f"API: {load}")
    log(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
