"""The health analyses as a pure function: tablet records and checks in, problems out."""

from __future__ import annotations

import dataclasses

from mysqlctl.flavor import ReplicationStatus, ServerStatus
from mysqlctl.gtid import MariadbGtidSet
from orchestrator.health.analysis import Problem, ProblemKind, TabletHealth, analyze
from topo.records import LockInfo, Shard, Tablet, TabletType

K = ProblemKind
SHARD = Shard(keyspace="commerce", name="0", primary_alias="zone1-101")
PORTS = {"zone1-101": 3301, "zone1-102": 3302, "zone1-103": 3303, "zone1-104": 3304}


def tablet(alias: str, type_: TabletType = TabletType.REPLICA, **kw: object) -> Tablet:
    return Tablet(alias=alias, keyspace="commerce", shard="0", type=type_,
                  mysql_host="127.0.0.1", mysql_port=PORTS[alias], **kw)  # type: ignore[arg-type]  # fmt: skip


TABLETS = [tablet("zone1-101", TabletType.PRIMARY), tablet("zone1-102"), tablet("zone1-103")]


def repl(
    source: str = "zone1-101",
    *,
    io: str = "Yes",
    sql: bool = True,
    io_error: str = "",
    sql_error: str = "",
) -> ReplicationStatus:
    pos = MariadbGtidSet.parse("0-101-10")
    return ReplicationStatus(
        source_host="127.0.0.1", source_port=PORTS[source], io_running=io == "Yes",
        sql_running=sql, io_state=io, received=pos, applied=pos, lag_seconds=0,
        last_io_error=io_error, last_sql_error=sql_error,
    )  # fmt: skip


def up(
    alias: str,
    *,
    read_only: bool = True,
    replication: ReplicationStatus | None = None,
    errant: str = "",
) -> TabletHealth:
    status = ServerStatus(
        server_id=int(alias.split("-")[1]), server_uuid=None, version="10.11.6-MariaDB",
        read_only=read_only, position=MariadbGtidSet.parse("0-101-10"), replication=replication,
        semi_sync_primary=False, semi_sync_replica=False, errant=MariadbGtidSet.parse(errant),
    )  # fmt: skip
    return TabletHealth(alias, status, None, 1.0, 0)


def down(alias: str, failures: int = 1, error: str = "connection refused") -> TabletHealth:
    return TabletHealth(alias, None, error, 1.0, failures)


def healthy_shard(**changes: TabletHealth) -> dict[str, TabletHealth]:
    health = {
        "zone1-101": up("zone1-101", read_only=False),
        "zone1-102": up("zone1-102", replication=repl()),
        "zone1-103": up("zone1-103", replication=repl()),
    }
    health.update({k.replace("_", "-"): v for k, v in changes.items()})
    return health


def kinds(problems: list[Problem]) -> list[tuple[ProblemKind, str | None]]:
    return [(p.kind, p.tablet) for p in problems]


def test_healthy_shard_has_no_problem() -> None:
    assert analyze(SHARD, TABLETS, healthy_shard()) == []


def test_unchecked_tablets_are_neither_healthy_nor_failing() -> None:
    assert analyze(SHARD, TABLETS, {}) == []


def test_locked_shard_is_skipped_whatever_its_state() -> None:
    lock = LockInfo(keyspace="commerce", shard="0", action="PlannedReparentShard",
                    holder_host="h", holder_pid=1, instance_id="orc-1", workflow_id="prs-1")  # fmt: skip
    health = healthy_shard(zone1_101=down("zone1-101"))
    problems = analyze(SHARD, TABLETS, health, lock=lock)
    assert kinds(problems) == [(K.SHARD_LOCKED, None)]
    assert "PlannedReparentShard" in problems[0].detail and "skipped" in problems[0].detail


def test_dead_primary_confirmed_by_every_replica() -> None:
    health = healthy_shard(
        zone1_101=down("zone1-101"),
        zone1_102=up("zone1-102", replication=repl(io="Connecting", io_error="error reconnecting")),
        zone1_103=up("zone1-103", replication=repl(io="No")),
    )
    problems = analyze(SHARD, TABLETS, health)
    assert kinds(problems) == [(K.DEAD_PRIMARY, "zone1-101")]
    assert "zone1-102 (io Connecting: error reconnecting)" in problems[0].detail


def test_partition_from_orchestrator_only_is_not_a_dead_primary() -> None:
    health = healthy_shard(
        zone1_101=down("zone1-101", error="Access denied"),
        zone1_102=up("zone1-102", replication=repl(io="Connecting")),
        zone1_103=up("zone1-103", replication=repl()),  # still connected to the primary
    )
    problems = analyze(SHARD, TABLETS, health)
    assert kinds(problems) == [(K.PRIMARY_UNREACHABLE, "zone1-101")]
    assert "zone1-103 still replicate" in problems[0].detail


def test_unreachable_replicas_do_not_vote() -> None:
    health = healthy_shard(
        zone1_101=down("zone1-101"),
        zone1_102=down("zone1-102"),
        zone1_103=up("zone1-103", replication=repl(io="Connecting")),
    )
    assert kinds(analyze(SHARD, TABLETS, health)) == [
        (K.DEAD_PRIMARY, "zone1-101"),
        (K.TABLET_UNREACHABLE, "zone1-102"),  # reported, but it does not vote
    ]


def test_no_replicas_never_dead_primary() -> None:
    only_primary = [tablet("zone1-101", TabletType.PRIMARY)]
    problems = analyze(SHARD, only_primary, {"zone1-101": down("zone1-101", 10)})
    assert kinds(problems) == [(K.DEAD_PRIMARY_WITHOUT_REPLICAS, "zone1-101")]


def test_no_reachable_replica_never_dead_primary() -> None:
    health = {a: down(a, 10) for a in PORTS if a != "zone1-104"}
    assert kinds(analyze(SHARD, TABLETS, health))[0] == (
        K.DEAD_PRIMARY_WITHOUT_REPLICAS,
        "zone1-101",
    )


def test_replicas_of_another_source_cannot_confirm_a_dead_primary() -> None:
    health = healthy_shard(
        zone1_101=down("zone1-101"),
        zone1_102=up("zone1-102", replication=repl("zone1-103", io="Connecting")),
        zone1_103=up("zone1-103"),
    )
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.PRIMARY_UNREACHABLE, "zone1-101")]


def test_with_the_primary_down_replication_is_not_judged() -> None:
    health = healthy_shard(
        zone1_101=down("zone1-101"),
        zone1_102=up("zone1-102", replication=repl(io="Connecting")),
        zone1_103=up("zone1-103", replication=None),
    )
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.DEAD_PRIMARY, "zone1-101")]


def test_primary_read_only_when_nothing_else_is_writable() -> None:
    health = healthy_shard(zone1_101=up("zone1-101", read_only=True))
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.PRIMARY_READ_ONLY, "zone1-101")]


def test_primary_read_only_not_made_writable_while_a_replica_is_writable() -> None:
    health = healthy_shard(
        zone1_101=up("zone1-101", read_only=True),
        zone1_102=up("zone1-102", read_only=False, replication=repl()),
    )
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.REPLICA_WRITABLE, "zone1-102")]


def test_replica_writable() -> None:
    health = healthy_shard(zone1_103=up("zone1-103", read_only=False, replication=repl()))
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.REPLICA_WRITABLE, "zone1-103")]


def test_writable_spare_and_drained_tablets_are_fenced_too() -> None:
    tablets = [TABLETS[0], tablet("zone1-102", TabletType.SPARE),
               tablet("zone1-103", TabletType.DRAINED)]  # fmt: skip
    health = healthy_shard(
        zone1_102=up("zone1-102", read_only=False),
        zone1_103=up("zone1-103", read_only=False),
    )
    assert kinds(analyze(SHARD, tablets, health)) == [
        (K.TABLET_SPARE, "zone1-102"),
        (K.REPLICA_WRITABLE, "zone1-102"),
        (K.REPLICA_WRITABLE, "zone1-103"),
        (K.NO_SERVING_REPLICA, None),
    ]


def test_replica_not_replicating() -> None:
    health = healthy_shard(zone1_102=up("zone1-102", replication=None))
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.REPLICA_NOT_REPLICATING, "zone1-102")]


def test_replica_wrong_source() -> None:
    health = healthy_shard(zone1_102=up("zone1-102", replication=repl("zone1-103")))
    problems = analyze(SHARD, TABLETS, health)
    assert kinds(problems) == [(K.REPLICA_WRONG_SOURCE, "zone1-102")]
    assert "127.0.0.1:3303" in problems[0].detail


def test_replication_stopped_without_error() -> None:
    health = healthy_shard(
        zone1_102=up("zone1-102", replication=repl(io="No", sql=False)),
        zone1_103=up("zone1-103", replication=repl(io="No", sql=True)),
    )
    assert kinds(analyze(SHARD, TABLETS, health)) == [
        (K.REPLICATION_STOPPED, "zone1-102"),
        (K.REPLICATION_STOPPED, "zone1-103"),
        (K.NO_SERVING_REPLICA, None),
    ]


def test_io_thread_connecting_without_error_is_not_a_problem() -> None:
    health = healthy_shard(zone1_102=up("zone1-102", replication=repl(io="Connecting")))
    assert analyze(SHARD, TABLETS, health) == []


def test_replication_error_is_reported_not_stopped() -> None:
    health = healthy_shard(
        zone1_102=up("zone1-102", replication=repl(io="Yes", sql=False,
                                                   sql_error="Duplicate entry '1'")),
    )  # fmt: skip
    problems = analyze(SHARD, TABLETS, health)
    assert kinds(problems) == [(K.REPLICATION_ERROR, "zone1-102")]
    assert "Duplicate entry" in problems[0].detail


def test_errant_transactions_are_reported() -> None:
    health = healthy_shard(zone1_102=up("zone1-102", replication=repl(), errant="0-102-1"))
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.ERRANT_TRANSACTIONS, "zone1-102")]


def test_unhealthy_replica_after_n_failures_only() -> None:
    health = healthy_shard(zone1_103=down("zone1-103", failures=2))
    problems = analyze(SHARD, TABLETS, health, unhealthy_checks=3)
    assert kinds(problems) == [(K.TABLET_UNREACHABLE, "zone1-103")]  # reported, not acted on
    assert "2 failed check(s) in a row: connection refused" in problems[0].detail
    health = healthy_shard(zone1_103=down("zone1-103", failures=3))
    assert kinds(analyze(SHARD, TABLETS, health, unhealthy_checks=3)) == [
        (K.UNHEALTHY_TABLET, "zone1-103")
    ]


def test_unhealthy_spare_or_drained_stays_as_it_is() -> None:
    tablets = [TABLETS[0], tablet("zone1-102", TabletType.SPARE),
               tablet("zone1-103", TabletType.DRAINED)]  # fmt: skip
    health = healthy_shard(zone1_102=down("zone1-102", 9), zone1_103=down("zone1-103", 9))
    assert kinds(analyze(SHARD, tablets, health)) == [
        (K.TABLET_UNREACHABLE, "zone1-102"),
        (K.TABLET_SPARE, "zone1-102"),
        (K.TABLET_UNREACHABLE, "zone1-103"),
        (K.NO_SERVING_REPLICA, None),
    ]


def test_spare_with_target_type_returns_when_healthy() -> None:
    tablets = [TABLETS[0], tablet("zone1-102"),
               tablet("zone1-103", TabletType.SPARE, target_type=TabletType.RDONLY)]  # fmt: skip
    problems = analyze(SHARD, tablets, healthy_shard())
    assert kinds(problems) == [(K.SPARE_TABLET_HEALTHY, "zone1-103")]
    assert "rdonly" in problems[0].detail
    # while it still fails, it stays spare (and says so)
    health = healthy_shard(zone1_103=down("zone1-103", 5))
    assert kinds(analyze(SHARD, tablets, health)) == [
        (K.TABLET_UNREACHABLE, "zone1-103"),
        (K.TABLET_SPARE, "zone1-103"),
    ]


def test_spare_without_target_type_is_left_alone() -> None:
    """An old primary spared by a failover may hold errant writes: an operator decides."""
    tablets = [TABLETS[0], tablet("zone1-102"), tablet("zone1-103", TabletType.SPARE)]
    health = healthy_shard(zone1_103=up("zone1-103", replication=None))
    problems = analyze(SHARD, tablets, health)
    assert kinds(problems) == [(K.TABLET_SPARE, "zone1-103")]  # reported only
    assert "ChangeTabletType" in problems[0].detail


def test_interrupted_planned_reparent_is_undone_when_nobody_took_writes() -> None:
    shard = dataclasses.replace(SHARD, is_primary_serving=False)
    health = healthy_shard(zone1_101=up("zone1-101", read_only=True))
    assert kinds(analyze(shard, TABLETS, health)) == [(K.PRIMARY_NOT_SERVING, "zone1-101")]


def test_interrupted_reparent_after_promotion_is_reported_not_guessed() -> None:
    shard = dataclasses.replace(SHARD, is_primary_serving=False)
    health = healthy_shard(
        zone1_101=up("zone1-101", read_only=True),
        zone1_102=up("zone1-102", read_only=False, replication=None),
    )
    problems = analyze(shard, TABLETS, health)
    assert kinds(problems) == [(K.INTERRUPTED_REPARENT, "zone1-101")]
    assert "zone1-102 is writable" in problems[0].detail


def test_shard_without_primary() -> None:
    shard = dataclasses.replace(SHARD, primary_alias=None)
    tablets = [tablet("zone1-101"), tablet("zone1-102")]
    assert kinds(analyze(shard, tablets, {})) == [(K.NO_PRIMARY, None)]


def test_primary_replicating_is_reported() -> None:
    health = healthy_shard(
        zone1_101=up("zone1-101", read_only=False, replication=repl("zone1-102"))
    )
    assert kinds(analyze(SHARD, TABLETS, health)) == [(K.PRIMARY_REPLICATING, "zone1-101")]


def test_primary_moved_elsewhere_is_an_interrupted_reparent_not_a_writable_replica() -> None:
    """The topology's primary replicates from a writable tablet that replicates from nobody:
    the primary was moved (TER not reported yet, or interrupted). That tablet is the one taking
    writes; fencing it (ReplicaWritable) would leave the shard with no writable server."""
    health = healthy_shard(
        zone1_101=up("zone1-101", read_only=True, replication=repl("zone1-102")),
        zone1_102=up("zone1-102", read_only=False, replication=None),
        zone1_103=up("zone1-103", replication=repl("zone1-102")),
    )
    problems = analyze(SHARD, TABLETS, health)
    assert kinds(problems) == [(K.INTERRUPTED_REPARENT, "zone1-101")]
    assert "TabletExternallyReparented zone1-102" in problems[0].detail
    # The source still replicating itself, or read-only: no evidence of a move, report only.
    health["zone1-102"] = up("zone1-102", read_only=False, replication=repl("zone1-103"))
    assert (K.PRIMARY_REPLICATING, "zone1-101") in kinds(analyze(SHARD, TABLETS, health))


def test_other_shards_tablets_are_ignored() -> None:
    other = Tablet(alias="zone1-104", keyspace="commerce", shard="1", type=TabletType.REPLICA,
                   mysql_host="127.0.0.1", mysql_port=3304)  # fmt: skip
    health = {**healthy_shard(), "zone1-104": up("zone1-104", read_only=False)}
    assert analyze(SHARD, [*TABLETS, other], health) == []


def test_replication_stopped_by_an_operator_is_left_stopped() -> None:
    from workflows.replication import STOPPED_BY_OPERATOR_TAG

    tablets = [
        tablet("zone1-101", TabletType.PRIMARY),
        tablet("zone1-102", tags={STOPPED_BY_OPERATOR_TAG: "StopReplication"}),
        tablet("zone1-103"),
    ]
    health = healthy_shard(
        zone1_102=up("zone1-102", replication=repl(io="No", sql=False)),
        zone1_103=up("zone1-103", replication=repl(io="No", sql=False)),
    )
    problems = analyze(SHARD, tablets, health)
    assert kinds(problems) == [
        (K.REPLICATION_STOPPED_BY_OPERATOR, "zone1-102"),  # reported, not restarted
        (K.REPLICATION_STOPPED, "zone1-103"),
        (K.NO_SERVING_REPLICA, None),
    ]
    assert "StartReplication" in problems[0].detail


def test_replica_lagging_over_the_threshold_is_reported() -> None:
    lagging = dataclasses.replace(repl(), lag_seconds=42)
    health = healthy_shard(zone1_103=up("zone1-103", replication=lagging))
    assert analyze(SHARD, TABLETS, health) == []  # no threshold, no judgement
    assert analyze(SHARD, TABLETS, health, max_lag_s=60) == []
    problems = analyze(SHARD, TABLETS, health, max_lag_s=30)
    assert kinds(problems) == [(K.REPLICA_LAGGING, "zone1-103")]
    assert "42s behind the primary (threshold 30s)" in problems[0].detail


def test_shard_without_a_serving_replica() -> None:
    health = healthy_shard(zone1_102=down("zone1-102", 9), zone1_103=down("zone1-103", 9))
    problems = analyze(SHARD, TABLETS, health, unhealthy_checks=3)
    assert kinds(problems) == [
        (K.UNHEALTHY_TABLET, "zone1-102"),
        (K.UNHEALTHY_TABLET, "zone1-103"),
        (K.NO_SERVING_REPLICA, None),
    ]
    assert "replicas: zone1-102, zone1-103" in problems[-1].detail
    only_primary = [tablet("zone1-101", TabletType.PRIMARY)]
    problems = analyze(SHARD, only_primary, {"zone1-101": up("zone1-101", read_only=False)})
    assert kinds(problems) == [(K.NO_SERVING_REPLICA, None)]
    assert "no replica tablet" in problems[0].detail


def test_shard_without_primary_and_without_tablets() -> None:
    shard = dataclasses.replace(SHARD, primary_alias=None)
    problems = analyze(shard, [], {})
    assert kinds(problems) == [(K.NO_PRIMARY, None)]
    assert "no tablet" in problems[0].detail


def test_tablet_in_maintenance_is_reported_until_its_window_ends() -> None:
    from workflows.common import MAINTENANCE_TAG, Maintenance

    window = Maintenance(until=1000.0, reason="kernel upgrade", by="alice")
    tablets = [TABLETS[0], TABLETS[1], tablet("zone1-103", tags={MAINTENANCE_TAG: window.to_tag()})]
    health = healthy_shard(zone1_103=down("zone1-103", 1))
    problems = analyze(SHARD, tablets, health, now=400.0)
    assert kinds(problems) == [
        (K.TABLET_IN_MAINTENANCE, "zone1-103"),
        (K.TABLET_UNREACHABLE, "zone1-103"),
    ]
    assert "kernel upgrade" in problems[0].detail and "600s left" in problems[0].detail
    # Past `until` the window is over by itself.
    assert kinds(analyze(SHARD, tablets, health, now=1000.5)) == [
        (K.TABLET_UNREACHABLE, "zone1-103")
    ]
