"""The workload: jobs submitted through the API, spread over time, so that every fault finds
work in flight.

At least `--jobs` jobs, each retried with the same idempotency key until the API accepts it
(a fault may refuse it: 5xx, a dropped connection). Job i waits until the faults have caught up
with it (jobs and faults interleave) or fewer than two jobs are in flight. Once the `--jobs`
are in, more follow, one whenever fewer than two are in flight, until every fault has landed:
a fault waits for a running stage, so the cluster must never run dry while faults remain.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections.abc import Callable

import httpx

from .history import History

SENTENCES = [
    "Hello.",
    "Good morning, everyone.",
    "This is a crash drill.",
    "The quick brown fox jumps over the lazy dog.",
    "Nothing that was accepted may ever be lost, whatever happens to the machines.",
    "Workers die, Redis restarts, and the orchestrator comes back; the job still finishes.",
    "Please hold while we render your talking head, one checkpoint at a time.",
    "Every stage publishes its result exactly once, by a single atomic rename of its folder.",
]
BUSY = 2  # jobs in flight that keep every stage's workers fed


class Generator:
    """Submits the drill's jobs from its own thread (`run`). `faults_landed()` counts the faults
    injected so far, `faults_done()` says every fault has landed, `in_flight()` counts accepted
    jobs not yet terminal and `redis_up()` whether Redis runs (callables of the drill's)."""

    def __init__(self, args: argparse.Namespace, api_url: str, avatar_id: str, history: History,
                 log: Callable[[str], None], faults_landed: Callable[[], int],
                 faults_done: Callable[[], bool], in_flight: Callable[[], int],
                 redis_up: Callable[[], bool], headers: dict[str, str] | None = None) -> None:
        self.args, self.api_url, self.avatar_id = args, api_url, avatar_id
        self.headers = headers or {}  # the API's token, where it needs one
        self.history, self.log = history, log
        self.faults_landed, self.faults_done = faults_landed, faults_done
        self.in_flight, self.redis_up = in_flight, redis_up
        self.rng = random.Random(args.seed * 7919 + 1)
        self.stop = threading.Event()  # set: submit nothing more
        self.done = threading.Event()  # set once the last submission has ended
        self.submitting = False  # a POST is in flight (a good moment to kill the API)
        self.tag = f"drill-{args.seed}-{os.getpid()}-{int(time.time())}"

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.api_url, timeout=15,
                              headers=self.headers) as client:
                i = 0
                while not self.stop.is_set() and (i < self.args.jobs or not self.faults_done()):
                    self.submit(client, i)
                    i += 1
                    self.pace(i)
        finally:
            self.done.set()

    def body(self) -> dict[str, object]:
        text = " ".join(self.rng.choice(SENTENCES)
                        for _ in range(self.rng.choice((1, 2, 2, 3, 4))))
        return {"avatar_id": self.avatar_id, "text": text, "size": self.args.size}

    def submit(self, client: httpx.Client, i: int) -> None:
        """Submit job i until it is accepted, refused for good (4xx) or the drill stops."""
        body = self.body()
        self.history.begin(i)
        while not self.stop.is_set():
            self.submitting = True
            try:
                resp = client.post("/v1/jobs", json=body,
                                   headers={"Idempotency-Key": f"{self.tag}-{i}"})
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            else:
                if resp.status_code == 202:
                    self.history.accept(i, resp.json()["id"], time.time())
                    return
                why = f"http {resp.status_code}"
                if resp.status_code < 500:
                    self.log(f"job {i} refused for good: {resp.status_code} {resp.text[:200]}")
                    self.history.failure(why, refused_for_good=i)
                    return
            finally:
                self.submitting = False
            self.history.failure(why)
            time.sleep(0.5)

    def pace(self, i: int) -> None:
        """Wait before job i: a random gap, then until the faults have caught up with it or
        fewer than BUSY jobs are in flight. Past `--jobs`, only the latter (or the last fault)."""
        time.sleep(self.rng.uniform(0, 2 * self.args.submit_gap))
        while not self.stop.is_set():
            if self.faults_done():
                return
            caught_up = self.faults_landed() * self.args.jobs >= i * self.args.faults
            if i < self.args.jobs and caught_up:
                return
            if self.redis_up() and self.in_flight() < BUSY:
                return
            time.sleep(0.2)
