"""Crash-recovery drill: run real jobs through a real cluster while killing its parts.

Starts its own redis-server (AOF, own port, own temp dir), the orchestrator and workers (2 visual,
1 audio, 1 compose by default) with a short lease, creates an avatar, submits jobs and injects
K faults chosen from `--seed`, each on work in flight:

* kill-audio / kill-visual / kill-compose: SIGKILL a worker of that stage (restarted after a
  random delay), aimed at a phase: before pickup (a job is queued for the stage), mid-render
  (an execution is running) or publish (the execution wrote its manifest / renamed its output);
* kill-orchestrator: SIGKILL the API + reconciler, restarted after a random delay;
* kill-redis: SIGKILL redis-server, restarted from the same AOF dir after a random delay;
* redis-exit: SIGKILL redis-server and leave it to the stack's supervisor (scripts/launcher.py's
  `Supervisor`, which runs the drill's Redis) to notice and restart it, with its own backoff;
* fill-disk: fill the small filesystem that holds DATA_DIR and Redis's AOF (a tmpfs the drill
  mounts, `--disk-mb`; root only) to the last byte for a few seconds, then free it: the API
  refuses new work (507), stages wait for space, Redis exits on its AOF write error and the
  supervisor brings it back once space returns;
* stop-worker: SIGSTOP a worker in the middle of an execution for longer than the lease, then
  SIGCONT.

With `--hosts 3 --store s3` (`make drill HOSTS=3 STORE=s3`, root) the cluster is spread over
network-namespace hosts with the job files in SeaweedFS (`spread`), and two kinds join:
cut-host (a worker host's link down mid-render for a few seconds) and kill-store (SeaweedFS
SIGKILLed and started again); the checker reads the jobs' files from the bucket.

A fault waits for a running stage (a worker fault: one of its own stage), and jobs keep coming
(past `--jobs`) until every fault has landed. Stages overlap (PIPELINE_OVERLAP): a share of the
faults of every kind (`--overlap-share`, a third) waits until one job has two stages running at
once and strikes one of them (the visual worker while its audio still speaks, the compose
worker while visual draws, ...). Then the drill waits until every accepted job is terminal and
checks what must hold: no accepted job lost, at most one published output per job+stage, every
succeeded job's outputs intact (ffprobe, manifests' sha256, its watch stream whole, no temp dirs
left), no piece announced twice, every consumer's piece reads in order, no pieces folder left
where it should be gone. It prints a summary (with how many faults hit a running stage, and
which, and how many hit overlapping stages), writes a JSON report (`--report`) and exits 1 if an
invariant is broken. Evidence (audit log, process logs,
data dir) is kept in the drill's temp dir when it fails, or always with `--keep`.

The parts, as in Jepsen: `generator` (the workload), `nemesis` (the faults), `history` (what
happened), `checker` (the guarantees), `cluster` (the processes, through scripts/launcher.py),
`cli` (the run). Run it with the orchestrator's venv:
`.venvs/orchestrator/bin/python scripts/drill` (`make drill`).
"""
