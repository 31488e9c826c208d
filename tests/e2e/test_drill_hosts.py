"""The drill's fault schedule with and without hosts (`--hosts 3 --store s3`), its options, how
its workers are dealt over the hosts and how host and store outages are reported. Quick: no
process is started (the long run is `make drill HOSTS=3 STORE=s3`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from drill.checker import hosts_lines, outages  # noqa: E402
from drill.cli import parse_args  # noqa: E402
from drill.cluster import Cluster  # noqa: E402
from drill.history import Fault, History  # noqa: E402
from drill.nemesis import HOST_KINDS, KINDS, Nemesis  # noqa: E402
from drill.pieces import reads  # noqa: E402
from drill.spread import SpreadCluster, _pieces_to_go  # noqa: E402

WORKERS = {"audio": 1, "visual": 2, "compose": 1}


def _plan(cluster: Cluster, argv: list[str], tmp_path: Path) -> list[tuple[str, str]]:
    logged: list[str] = []
    nemesis = Nemesis(parse_args(argv), cluster, History(tmp_path / "audit.jsonl"),
                      lambda j, n: None, lambda s: 0, lambda: False, logged.append)
    return nemesis.plan()


def test_one_host_plans_as_before(tmp_path: Path) -> None:
    """Without --hosts the schedule is the one the kinds of today give, with no host fault."""
    cluster = Cluster(tmp_path / "one", {}, WORKERS, disk_mb=0)
    default = _plan(cluster, ["--faults", "14", "--seed", "4"], tmp_path)
    asked = _plan(cluster, ["--faults", "14", "--seed", "4", "--kinds", ",".join(KINDS)],
                  tmp_path)
    assert default == asked
    assert {k for k, _ in default} == set(KINDS) - {"fill-disk"}  # no small disk here
    only_hosts = _plan(cluster, ["--faults", "3", "--kinds", "cut-host,kill-store"], tmp_path)
    assert len(only_hosts) == 3 and not {k for k, _ in only_hosts} & set(HOST_KINDS)


def test_hosts_plan_partitions_and_store_kills(tmp_path: Path) -> None:
    cluster = SpreadCluster(tmp_path / "spread", {}, WORKERS, 3, disk_mb=0)
    try:
        plan = _plan(cluster, ["--hosts", "3", "--store", "s3", "--faults", "9", "--seed", "2"],
                     tmp_path)
        assert {k for k, _ in plan} == (set(KINDS) | set(HOST_KINDS)) - {"fill-disk"}
        aims = {k: a for k, a in plan if k in HOST_KINDS}
        assert aims["cut-host"] in ("mid-render", "overlap"), plan
        assert aims["kill-store"] in ("any", "overlap"), plan
        # the workers dealt over the two worker hosts in turn, each host its own scratch
        assert cluster.host_of == {"audio-0": "host-1", "visual-0": "host-2",
                                   "visual-1": "host-1", "compose-0": "host-2"}
        assert cluster.scratch("visual-1") == cluster.scratch("audio-0") != cluster.data_dir
        assert cluster.scratch("visual-0") != cluster.scratch("visual-1")
        assert cluster.api_url.startswith(f"http://{cluster.hosts.main_addr}:")
        assert cluster.api_headers["Authorization"].startswith("Bearer ")
    finally:
        cluster.stop()


def test_hosts_and_s3_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--hosts", "3"], ["--store", "s3"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert "--hosts and --store s3 go together" in capsys.readouterr().err
    assert parse_args([]).hosts == 0 and parse_args([]).store == "local"


def test_outages_are_reported_by_kind() -> None:
    faults = [Fault(1, "cut-host", "mid-render", down_s=4.0, recovery_s=9.5, landed="running"),
              Fault(2, "cut-host", "overlap", down_s=2.5, recovery_s=3.0, landed="running"),
              Fault(3, "kill-store", "any", store_back_s=18.2, recovery_s=21.0,
                    landed="running"),
              Fault(4, "kill-visual", "publish", recovery_s=1.0)]
    out = outages(faults)
    assert out["cut-host"] == {"n": 2, "down_s": {"p50": 2.5, "max": 4.0},
                               "recovery_s": {"p50": 3.0, "max": 9.5}, "hit_running_stage": 2}
    assert out["kill-store"]["store_back_s"] == {"p50": 18.2, "max": 18.2}
    report = {"hosts": {"hosts": 3, "workers_on": {"host-1": ["audio-0"]}, "outages": out},
              "recovery_s": {"by_kind": {"cut-host": {"p50": 3.0, "max": 9.5}}}}
    text = "\n".join(hosts_lines(report))
    assert "host partitions (link down): 2, 2 mid-render" in text
    assert "store answering again p50/max 18.2s / 18.2s" in text


def test_pieces_left_in_the_bucket() -> None:
    keys = {"jobs/a/compose.pieces/seg_00000.m4s": 9, "jobs/b/visual.pieces/c_00000.mp4": 9}
    assert not _pieces_to_go(keys, {"a": "succeeded", "b": "running"})
    assert _pieces_to_go(keys, {"a": "canceled", "b": "running"})
    assert _pieces_to_go(keys, {"a": "succeeded", "b": "succeeded"})


def test_a_stage_back_from_a_store_wait_reads_from_piece_0() -> None:
    """A stage that waited for the store runs its handler again from its first piece: in
    order; the same read without the wait is not."""
    def read(first: int, last: int) -> dict[str, object]:
        return {"event": "piece-read", "job": "j", "stage": "compose", "upstream": "visual",
                "exec": "e", "first": first, "last": last}

    wait = {"event": "store-wait", "job": "j", "stage": "compose", "exec": "e"}
    assert reads([read(0, 1), wait, read(0, 1), read(2, 3)])["out_of_order"] == []
    assert len(reads([read(0, 1), read(0, 1)])["out_of_order"]) == 1
