"""Automatic recovery, end to end: real MariaDB servers, a real etcd, the service in-process.

Each test breaks something the way it breaks in production (SIGKILL of mysqld, a replica made
writable by hand, replication stopped or pointed elsewhere, the orchestrator's account locked on
the primary only) and checks that the health checks repair it, or on purpose do not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from mysqlctl.client import MysqlClient, MysqlParams
from orchestrator.health.analysis import ProblemKind
from tests.fixtures_cluster import Shard, ShardFactory, Writer
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import (
    FAST,
    first_write_after_failure,
    recoveries,
    start_service,
    wait_for,
)
from topo.records import TabletType, WorkflowRecord, WorkflowStatus

pytestmark = pytest.mark.slow


async def test_dead_primary_is_replaced_without_any_command(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    # semi_sync: a write is acknowledged only once a replica has it, so a failover may lose
    # none (with asynchronous replication the last writes before a SIGKILL can be lost; no
    # orchestrator can recover what never left the dead server).
    shard = await shard_factory(tablets=3, durability="semi_sync")
    await shard.create_test_table()
    rs = await start_service(shard, service_factory, recovery_block_s=30)
    writer = Writer(shard)
    writer.start()
    await wait_for(lambda: len(writer.acked) >= 50, 10, "writes on the first primary")

    killed_at = time.monotonic()
    shard.server("zone1-101").kill()
    first_write = await wait_for(
        lambda: first_write_after_failure(writer, killed_at), 15, "a write on a new primary"
    )
    failover_s = first_write - killed_at
    acked_before = len(writer.acked)
    await wait_for(lambda: len(writer.acked) >= acked_before + 50, 10, "more writes")
    await writer.stop()
    # The dead primary's server: refused or lost connections, or a commit waiting for an ACK.
    writer.check_errors("unreachable", "timeout")

    print(f"\nautomatic failover: mysqld SIGKILLed -> first acknowledged write on the new "
          f"primary in {failover_s * 1000:.0f} ms (longest gap between acknowledged writes "
          f"{writer.max_gap_ms():.0f} ms; {len(writer.acked)} writes acknowledged, "
          f"{writer.errors} refused)")  # fmt: skip
    assert failover_s < 10
    new_primary = await shard.check_invariants()
    assert new_primary != "zone1-101"
    assert (await shard.store.get_tablet("zone1-101")).type == TabletType.SPARE
    assert await writer.missing_on(new_primary) == []
    done = recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded")
    assert len(done) == 1 and done[0]["action"] == "EmergencyReparentShard"
    assert new_primary in done[0]["reason"]
    # What the API serves is plain JSON.
    json.dumps(rs.service.health.snapshot())
    json.dumps(rs.service.health.recoveries())
    json.dumps(rs.service.health.problems())
    # The time of the failover is in etcd, for whichever instance leads next.
    last = await rs.service.health.recovery.last_failover("commerce", "0")
    assert last is not None and last["result"] == "succeeded"


async def test_partition_between_orchestrator_and_primary_alone_triggers_nothing(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    # The service gets an account of its own on every server (outside the binlog, so no
    # server gains a transaction); replication keeps using the launcher's account.
    user, password = "orc_svc", "orc-svc-password"
    for alias in shard.aliases:
        await _as_root_without_binlog(shard, alias, [
            f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%' WITH GRANT OPTION",
        ])  # fmt: skip
    rs = await start_service(
        shard, service_factory, mysql_user=user, mysql_password=password, recovery_block_s=0
    )

    # Now the primary refuses the orchestrator (and only the orchestrator).
    await _as_root_without_binlog(shard, "zone1-101", [f"ALTER USER '{user}'@'%' ACCOUNT LOCK"])
    await shard.admin("zone1-101").kill_connections(user)
    health = rs.service.health
    await wait_for(
        lambda: health.snapshot()["zone1-101"]["consecutive_failures"] >= 2, 5, "checks to fail"
    )
    # Nothing may happen for ten health intervals: a recovery the analysis asked for would run
    # within one or two, so ten show that none is asked for (not that it is merely late).
    await asyncio.sleep(10 * FAST["health_interval_s"])

    snap = health.snapshot()
    assert not snap["zone1-101"]["healthy"]
    problems = health.problems()["commerce/0"]
    assert [p["kind"] for p in problems] == [ProblemKind.PRIMARY_UNREACHABLE.value]
    assert "still replicate from it" in problems[0]["detail"]
    assert recoveries(rs, ProblemKind.DEAD_PRIMARY) == []
    assert await shard.primary_alias() == "zone1-101"
    assert await shard.check_invariants() == "zone1-101"


async def test_replica_problems_are_repaired(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    r2, r3 = shard.admin("zone1-102"), shard.admin("zone1-103")
    p = shard.server("zone1-101")

    # A replica made writable by hand: fenced again.
    await r2.set_read_only(False)
    await wait_for(lambda: recoveries(rs, ProblemKind.REPLICA_WRITABLE, "succeeded"), 5,
                   "SetReadOnly")  # fmt: skip
    assert (await r2.status()).read_only

    # Replication stopped by hand: started again.
    await r3.stop_replication()
    await wait_for(lambda: recoveries(rs, ProblemKind.REPLICATION_STOPPED, "succeeded"), 5,
                   "StartReplication")  # fmt: skip

    # Replication forgotten: ReparentTablet points it at the primary again.
    await r2.reset_replication()
    await wait_for(lambda: recoveries(rs, ProblemKind.REPLICA_NOT_REPLICATING, "succeeded"), 15,
                   "ReparentTablet of a replica without replication")  # fmt: skip

    # Replicating from another replica: ReparentTablet too.
    s2 = shard.server("zone1-102")
    await r3.set_replication_source(
        s2.host, s2.port, user=s2.admin_user, password=s2.admin_password, semi_sync=False
    )
    await wait_for(lambda: recoveries(rs, ProblemKind.REPLICA_WRONG_SOURCE, "succeeded"), 15,
                   "ReparentTablet of a replica with the wrong source")  # fmt: skip

    assert await shard.check_invariants() == "zone1-101"
    for alias in ("zone1-102", "zone1-103"):
        r = (await shard.admin(alias).status()).replication
        assert r is not None and (r.source_host, r.source_port) == (p.host, p.port)
    assert recoveries(rs, ProblemKind.DEAD_PRIMARY) == []


async def test_unhealthy_replica_becomes_spare_and_comes_back(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    store = shard.store

    shard.server("zone1-103").kill()
    await wait_for(lambda: recoveries(rs, ProblemKind.UNHEALTHY_TABLET, "succeeded"), 10,
                   "the dead replica to become spare")  # fmt: skip
    t = await store.get_tablet("zone1-103")
    assert (t.type, t.target_type) == (TabletType.SPARE, TabletType.REPLICA)
    graph = (await store.get_srv_keyspace("zone1", "commerce")).shard("0")
    assert graph is not None and [r.alias for r in graph.replicas] == ["zone1-102"]

    # Back up (replication does not start by itself: skip-slave-start): replica again, then
    # replicating again.
    await shard.server("zone1-103").start_again()
    await wait_for(lambda: recoveries(rs, ProblemKind.SPARE_TABLET_HEALTHY, "succeeded"), 10,
                   "the spare to return")  # fmt: skip
    t = await store.get_tablet("zone1-103")
    assert (t.type, t.target_type) == (TabletType.REPLICA, None)
    assert await shard.check_invariants() == "zone1-101"
    graph = (await store.get_srv_keyspace("zone1", "commerce")).shard("0")
    assert graph is not None and [r.alias for r in graph.replicas] == ["zone1-102", "zone1-103"]


async def test_second_dead_primary_within_block_period_is_not_recovered(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory, recovery_block_s=60)
    shard.server("zone1-101").kill()
    await wait_for(lambda: recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded"), 10,
                   "the first failover")  # fmt: skip
    second = await shard.check_invariants()

    shard.server(second).kill()
    blocked = await wait_for(lambda: recoveries(rs, ProblemKind.DEAD_PRIMARY, "blocked"), 5,
                             "the second failover to be blocked")  # fmt: skip
    # Nothing may happen for five health intervals: a failover not blocked would have started
    # within one (it is blocked from the first analysis on, as the entry above shows).
    await asyncio.sleep(5 * FAST["health_interval_s"])
    assert await shard.primary_alias() == second
    assert len(recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded")) == 1
    entries = recoveries(rs, ProblemKind.DEAD_PRIMARY, "blocked")
    assert len(entries) == 1, "a blocked recovery is one entry, updated in place"
    reason = blocked[0]["reason"]
    print(f"\nblocked: {reason}")
    assert "anti-flapping" in reason and "recovery_block_s=60" in reason
    assert blocked[0]["tablet"] == second


@pytest.mark.parametrize("switch", ["disable_active_reparents", "keyspace_auto_recovery_off"])
async def test_dead_primary_not_recovered_when_failover_is_switched_off(
    shard_factory: ShardFactory, service_factory: ServiceFactory, switch: str
) -> None:
    shard = await shard_factory(tablets=3)
    if switch == "keyspace_auto_recovery_off":
        await shard.store.update_keyspace_fields(
            "commerce", lambda k: dataclasses.replace(k, auto_recovery=False)
        )
        rs = await start_service(shard, service_factory)
        expected = "automatic recovery is off for keyspace commerce"
    else:
        rs = await start_service(shard, service_factory, disable_active_reparents=True)
        expected = "disable_active_reparents"
        # An external tool owns who is writable and who replicates from whom: a writable
        # replica may be its primary-elect, so it is reported, not fenced.
        await shard.admin("zone1-102").set_read_only(False)
        await wait_for(lambda: recoveries(rs, ProblemKind.REPLICA_WRITABLE, "blocked"), 5,
                       "the fencing to be blocked")  # fmt: skip
        assert not (await shard.admin("zone1-102").status()).read_only
        await shard.admin("zone1-102").set_read_only(True)

    shard.server("zone1-101").kill()
    blocked = await wait_for(lambda: recoveries(rs, ProblemKind.DEAD_PRIMARY, "blocked"), 5,
                             "the failover to be blocked")  # fmt: skip
    assert expected in blocked[0]["reason"]
    # Nothing may happen for five health intervals: a failover not blocked would have started
    # within one (it is blocked from the first analysis on, as the entry above shows).
    await asyncio.sleep(5 * FAST["health_interval_s"])
    assert await shard.primary_alias() == "zone1-101"
    assert recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded") == []


async def test_restarted_leader_finishes_what_a_dead_workflow_left(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    """A PlannedReparentShard died after taking the primary out of service and fencing it (its
    lock expired with its process): the new leader marks the record interrupted and undoes it."""
    shard = await shard_factory(tablets=3)
    store = shard.store
    now = time.time()
    dead = await store.create_workflow(
        WorkflowRecord(id="prs-dead-1", action="PlannedReparentShard", keyspace="commerce",
                       shard="0", instance_id="gone", created_at=now - 60, updated_at=now - 60)
    )  # fmt: skip
    await store.update_shard_fields(
        "commerce", "0", lambda s: dataclasses.replace(s, is_primary_serving=False)
    )
    await store.rebuild_serving_graph("commerce")
    await shard.admin("zone1-101").set_read_only(True)

    rs = await service_factory(shard, **FAST)
    await wait_for(
        lambda: recoveries(rs, ProblemKind.PRIMARY_NOT_SERVING, "succeeded"), 10, "the undo"
    )
    assert (await store.get_workflow(dead.id)).status == WorkflowStatus.INTERRUPTED
    assert (await store.get_shard("commerce", "0")).is_primary_serving
    graph = (await store.get_srv_keyspace("zone1", "commerce")).shard("0")
    assert graph is not None and graph.primary_serving
    assert await shard.check_invariants() == "zone1-101"


async def _as_root_without_binlog(shard: Shard, alias: str, statements: list[str]) -> None:
    """Account changes on one server only: a connection of its own with sql_log_bin=0."""
    s = shard.server(alias)
    client = MysqlClient(MysqlParams(s.host, s.port, s.admin_user, s.admin_password))
    try:
        await client.execute("SET SESSION sql_log_bin = 0")
        for sql in statements:
            await client.execute(sql)
    finally:
        await client.close()
