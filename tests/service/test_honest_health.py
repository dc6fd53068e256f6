"""Honest health (issue 11 items 4-5): what does not serve is reported, in `/api/v1/health`, in
the problem gauges of `/metrics`, and by the example alert rules of `compose/alerts.yml`; an
ERS on a healthy primary is a counted no-op; an ERS reports how long the shard really had no
primary. Real MariaDB servers, a real etcd, the service in-process, the CLI as a subprocess.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mysqlctl.client import MysqlClient, MysqlParams
from orchestrator import metrics
from orchestrator.health.analysis import ProblemKind as K
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import recoveries, start_service, wait_for
from tests.service.test_ctl import ctl
from topo.records import TabletType

pytestmark = pytest.mark.slow

ALERTS = Path(__file__).resolve().parents[2] / "compose" / "alerts.yml"


async def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """`/metrics` as {sample name: [(labels, value)]}."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v1/health") as r:
        assert r.status == 200
        return dict(await r.json())


def shard_problems(doc: dict[str, Any], key: str = "commerce/0") -> list[tuple[str, str | None]]:
    return [(p["kind"], p["tablet"]) for p in doc["problems"].get(key, [])]


_RULE = re.compile(
    r"^(?:(?P<agg>max|min|sum)\()?(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?\)?"
    r"\s*(?P<op>>|<|>=|<=|==)\s*(?P<value>[0-9.]+)$"
)


def firing(expr: str, samples: dict[str, list[tuple[dict[str, str], float]]]) -> list[dict]:
    """Evaluate one alert expression of the simple shape the example rules keep to
    (`metric{label="v"} > N`, or `max(metric) < N`) against scraped samples."""
    m = _RULE.match(expr.strip())
    assert m, f"alert expression outside the simple shape: {expr}"
    want = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
    series = [(lab, v) for lab, v in samples.get(m["name"], [])
              if all(lab.get(k) == v2 for k, v2 in want.items())]  # fmt: skip
    if m["agg"]:
        values = [v for _, v in series]
        aggs: dict[str, Callable[[list[float]], float]] = {"max": max, "min": min, "sum": sum}
        series = [({}, aggs[m["agg"]](values))] if values else []
    threshold = float(m["value"])
    ops = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__,
           "==": float.__eq__}  # fmt: skip
    return [lab for lab, v in series if ops[m["op"]](v, threshold)]


def alert_rules() -> dict[str, str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def test_example_alert_rules_use_only_exported_metrics() -> None:
    exported = {m.name for m in metrics.REGISTRY.collect()}
    rules = alert_rules()
    assert len(rules) >= 8
    for name, expr in rules.items():
        m = _RULE.match(expr)
        assert m, (name, expr)
        assert m["name"] in exported, (name, m["name"])
    problem_kinds = {k.value for k in K}
    for expr in rules.values():
        for kind in re.findall(r'problem="(\w+)"', expr):
            assert kind in problem_kinds, expr
    prometheus = (ALERTS.parent / "prometheus.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in prometheus
    assert (
        "./alerts.yml:/etc/prometheus/alerts.yml"
        in (ALERTS.parent / "docker-compose.yml").read_text()
    )


async def test_health_reports_every_tablet_and_shard_that_does_not_serve(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    rs = await start_service(shard, service_factory, replica_lag_threshold_s=1.0)
    doc = await health(rs.url)
    assert shard_problems(doc) == []

    # Replication stopped by an operator: reported, not repaired.
    r = await ctl(rs.url, "StopReplication", "zone1-102")
    assert r.code == 0, r.stderr
    await wait_for(
        lambda: _has(rs.url, (K.REPLICATION_STOPPED_BY_OPERATOR.value, "zone1-102")), 5,
        "ReplicationStoppedByOperator",
    )  # fmt: skip
    await asyncio.sleep(5 * 0.3)
    status = await shard.admin("zone1-102").replication_status()
    assert status is not None and not status.io_running and not status.sql_running
    assert recoveries(rs, K.REPLICATION_STOPPED) == []

    # A replica lagging over the threshold: its SQL thread blocked on a table lock.
    locker = _root_client(shard, "zone1-103")
    try:
        await locker.execute("LOCK TABLES test.acked WRITE")
        await shard.app_insert("zone1-101", 1)
        await wait_for(
            lambda: _has(rs.url, (K.REPLICA_LAGGING.value, "zone1-103")), 10, "ReplicaLagging"
        )
        samples = await scrape(rs.url)
        lag = {lab["alias"]: v for lab, v in samples["orc_tablet_replication_lag_seconds"]}
        assert lag["zone1-103"] > 1.0, lag
        assert "zone1-101" not in lag  # the primary replicates from nobody
        assert _count(samples, "ReplicaLagging") == 1
    finally:
        await locker.execute("UNLOCK TABLES")
        await locker.close()
    await shard.wait_rows("zone1-103", [1])

    # The last serving replica dies: unreachable, then spare; the shard has no serving replica.
    shard.server("zone1-103").kill()
    doc = await wait_for(
        lambda: _has(rs.url, (K.TABLET_UNREACHABLE.value, "zone1-103"), (K.TABLET_SPARE.value,
                     "zone1-103"), (K.NO_SERVING_REPLICA.value, None)),
        15, "zone1-103 unreachable and spare, no serving replica",
    )  # fmt: skip
    assert (await shard.tablet("zone1-103")).type == TabletType.SPARE
    detail = {p["kind"]: p["detail"] for p in doc["problems"]["commerce/0"]}
    assert "replicas: zone1-102" in detail[K.NO_SERVING_REPLICA.value]
    samples = await scrape(rs.url)
    assert _count(samples, "ShardHasNoServingReplica") == 1
    assert _count(samples, "TabletUnreachable") == 1 and _count(samples, "TabletInSpare") == 1
    rules = alert_rules()
    for alert in ("OrcShardWithoutServingReplica", "OrcTabletUnreachable", "OrcTabletInSpare"):
        assert firing(rules[alert], samples) == [
            {"keyspace": "commerce", "shard": "0", "problem": _problem(rules[alert])}
        ], alert
    assert firing(rules["OrcDeadPrimary"], samples) == []
    assert firing(rules["OrcNoLeader"], samples) == []

    # A shard without a primary (and without tablets) is reported too.
    r = await ctl(rs.url, "CreateShard", "commerce/1")
    assert r.code == 0, r.stderr
    doc = await wait_for(
        lambda: _has(rs.url, (K.NO_PRIMARY.value, None), key="commerce/1"), 5, "ShardHasNoPrimary"
    )
    samples = await scrape(rs.url)
    assert {"keyspace": "commerce", "shard": "1", "problem": "ShardHasNoPrimary"} in firing(
        rules["OrcShardWithoutPrimary"], samples
    )


async def test_ers_on_a_healthy_primary_is_a_counted_no_op(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    before = _reparents(await scrape(rs.url), "EmergencyReparentShard")
    r = await ctl(rs.url, "EmergencyReparentShard", "commerce/0")
    assert r.code == 0, r.stderr
    assert r.json["noop"] is True and r.json["changed"] is False
    assert r.json["new_primary"] == "zone1-101"
    assert r.json["summary"].startswith("no-op: nothing changed, zone1-101 stays the primary")
    assert "no-op: nothing changed" in r.stderr  # said to the person, not only in the JSON
    assert await shard.primary_alias() == "zone1-101"
    after = _reparents(await scrape(rs.url), "EmergencyReparentShard")
    assert after.get("noop", 0) == before.get("noop", 0) + 1
    assert after.get("succeeded", 0) == before.get("succeeded", 0)


async def test_ers_reports_the_window_since_the_dead_primarys_last_healthy_check(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory, recoveries_enabled=False)
    await wait_for(lambda: rs.service.health.last_healthy_at("zone1-101"), 5, "a healthy check")
    killed_at = time.time()
    shard.server("zone1-101").kill()
    await wait_for(
        lambda: (rs.service.health.snapshot()["zone1-101"]["consecutive_failures"] >= 2), 5,
        "the health checks to lose the primary",
    )  # fmt: skip
    await asyncio.sleep(1.0)
    # The counter is process-wide: earlier tests in the same run count their ERS too.
    before = _reparents(await scrape(rs.url), "EmergencyReparentShard")
    started = time.time()
    r = await ctl(rs.url, "EmergencyReparentShard", "commerce/0")
    finished = time.time()
    assert r.code == 0, r.stderr
    res = r.json
    assert res["changed"] is True and res["noop"] is False
    assert res["new_primary"] in ("zone1-102", "zone1-103")
    last = res["primary_last_healthy_at"]
    assert killed_at - 1.0 <= last <= killed_at, (last, killed_at)
    window_s = res["unavailable_window_ms"] / 1000
    # From the last healthy check to the promotion: at least the time until ERS started, at
    # most until it finished; much longer than the workflow's own start -> promoted figure.
    assert started - killed_at <= window_s <= finished - last, (window_s, started - killed_at)
    assert window_s > res["write_unavailable_ms"] / 1000
    assert "since its last healthy check" in res["summary"]
    print(f"\nERS window from the dead primary's last healthy check: {window_s:.2f}s "
          f"(workflow start -> promoted: {res['write_unavailable_ms']} ms)")  # fmt: skip
    after = _reparents(await scrape(rs.url), "EmergencyReparentShard")
    assert after.get("succeeded", 0) == before.get("succeeded", 0) + 1


# -- helpers ---------------------------------------------------------------------------------


async def _has(url: str, *want: tuple[str, str | None], key: str = "commerce/0") -> Any:
    doc = await health(url)
    found = shard_problems(doc, key)
    return doc if all(w in found for w in want) else None


def _count(samples: dict[str, list[tuple[dict[str, str], float]]], problem: str) -> float:
    return sum(v for lab, v in samples.get("orc_shard_problems", [])
               if lab["problem"] == problem and lab["shard"] == "0")  # fmt: skip


def _problem(expr: str) -> str:
    m = re.search(r'problem="(\w+)"', expr)
    assert m
    return m.group(1)


def _reparents(samples: dict[str, list[tuple[dict[str, str], float]]], action: str) -> dict:
    return {lab["result"]: v for lab, v in samples.get("orc_reparent_total", [])
            if lab["action"] == action}  # fmt: skip


def _root_client(shard: Shard, alias: str) -> MysqlClient:
    s = shard.server(alias)
    return MysqlClient(MysqlParams(s.host, s.port, s.admin_user, s.admin_password))
