"""Leases (shared/leases.py) against a real Redis: a holder whose lease lapsed and was claimed
by another worker never extends or deletes the new holder's lease, for live sessions and batch
stages alike; and what each job transition's `LeaseTerm` admits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import clear_db

from shared import keys
from shared.leases import Lease, LeaseMode, LeaseTerm, StageLeases

DB = 13  # away from the other suites' databases
OTHER_TTL_S = 2.0  # the new holder's lease: far shorter than the old holder's
OWN_TTL_S = 30.0


class LapsingRedis(redis.Redis):
    """Fault injection: once armed, right after the first command that reads `key` returns,
    `lapse` runs (the lease expires and another worker claims it), as if the lease had lapsed
    in the gap between a holder check and the write that follows it."""

    key = ""
    lapse: Callable[[], None] | None = None

    def arm(self, key: str, lapse: Callable[[], None]) -> None:
        self.key, self.lapse = key, lapse

    def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = super().execute_command(*args, **options)
        reads = str(args[0]).upper() in ("GET", "EVALSHA", "EVAL")
        if self.lapse is not None and reads and self.key in args[1:]:
            lapse, self.lapse = self.lapse, None
            lapse()
        return reply


@pytest.fixture()
def url(redis_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    url = str(redis_server.url).rsplit("/", 1)[0] + f"/{DB}"
    with redis.Redis.from_url(url) as c:
        clear_db(c)
        yield url
        clear_db(c)


@pytest.fixture()
def conn(url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(url) as c:
        yield c


@pytest.fixture()
def lapsing(url: str) -> Iterator[LapsingRedis]:
    with LapsingRedis.from_url(url) as c:
        yield c


def _taken_over(conn: redis.Redis, key: str) -> Callable[[], None]:
    """The lease at `key` lapses and worker-b claims it for OTHER_TTL_S."""
    def lapse() -> None:
        conn.delete(key)
        assert Lease(conn, key, "worker-b", OTHER_TTL_S).claim()
    return lapse


def _held_by_b(conn: redis.Redis, key: str) -> None:
    assert keys.text(conn.get(key) or b"") == "worker-b"
    assert 0 < conn.pttl(key) <= OTHER_TTL_S * 1000  # worker-b's own TTL, not extended


def test_a_lapsed_live_lease_is_not_extended_for_its_new_holder(
        conn: redis.Redis, lapsing: LapsingRedis) -> None:
    key = keys.live_lease("s1", "visual")
    mine = Lease(lapsing, key, "worker-a", OWN_TTL_S)
    assert mine.claim()
    lapsing.arm(key, _taken_over(conn, key))
    mine.renew()  # the lease lapses and worker-b claims it as this renewal runs
    _held_by_b(conn, key)
    assert not mine.renew() and mine.lost  # the next renewal finds it gone
    _held_by_b(conn, key)


def test_a_lapsed_live_lease_is_not_released_from_its_new_holder(
        conn: redis.Redis, lapsing: LapsingRedis) -> None:
    key = keys.live_lease("s2", "audio")
    mine = Lease(lapsing, key, "worker-a", OWN_TTL_S)
    assert mine.claim()
    lapsing.arm(key, _taken_over(conn, key))
    mine.release()  # the lease lapses and worker-b claims it as this release runs
    _held_by_b(conn, key)


def test_a_live_lease_is_claimed_by_one_worker_at_a_time(conn: redis.Redis) -> None:
    key = keys.live_lease("s3", "visual")
    first, second = (Lease(conn, key, w, OWN_TTL_S) for w in ("worker-a", "worker-b"))
    assert first.claim() and not second.claim()
    assert not second.renew() and second.lost
    second.release()  # not its lease: nothing happens
    assert keys.text(conn.get(key) or b"") == "worker-a"
    assert first.renew() and not first.lost
    first.release()
    assert conn.get(key) is None and second.claim()


def test_a_lapsed_stage_lease_is_not_extended_for_its_new_execution(
        conn: redis.Redis, lapsing: LapsingRedis) -> None:
    key = keys.lease("job1", "audio")
    stage = StageLeases(lapsing, int(OWN_TTL_S * 1000))
    assert stage.claim(key, "exec-a")
    lapsing.arm(key, _taken_over(conn, key))
    stage.renew_stage("job1", "audio", "exec-a")
    _held_by_b(conn, key)
    assert not stage.renew_stage("job1", "audio", "exec-a")
    assert stage.stage_holder("job1", "audio") == "worker-b"


@pytest.mark.parametrize(("term", "admitted"), [
    (LeaseTerm.acquire("e1"), {None, "e1"}),
    (LeaseTerm.hold("e1"), {"e1"}),
    (LeaseTerm.release("e1"), {"e1"}),
    (LeaseTerm.absent(), {None}),
])
def test_what_each_lease_term_admits(term: LeaseTerm, admitted: set[str | None]) -> None:
    assert {h for h in (None, "e1", "e2") if term.admits(h)} == admitted
    assert term == LeaseTerm(term.mode, term.exec_id) and isinstance(term.mode, LeaseMode)
