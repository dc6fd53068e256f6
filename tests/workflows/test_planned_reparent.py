"""PlannedReparentShard against real etcd and MariaDB servers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mysqlctl.errors import MysqlServerError, MysqlUnreachableError
from mysqlctl.journal import read_journal
from tests.fixtures_cluster import Shard, ShardFactory, Writer
from tests.helpers.split_brain import SplitBrainWatcher
from topo.records import TabletType, WorkflowStatus
from workflows.emergency_reparent import EmergencyReparentOptions, emergency_reparent_shard
from workflows.errors import (
    AbortedError,
    ActiveReparentsDisabledError,
    InvalidArgumentError,
    PartialFailureError,
    PreconditionError,
)
from workflows.externally_reparented import (
    ExternallyReparentedOptions,
    tablet_externally_reparented,
)
from workflows.init_shard_primary import InitShardPrimaryOptions, init_shard_primary
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard


def prs(shard: Shard, **kw: object) -> PlannedReparentOptions:
    kw.setdefault("wait_replicas_timeout", 5.0)
    return PlannedReparentOptions(shard.keyspace, shard.shard, **kw)  # type: ignore[arg-type]


async def assert_unchanged(shard: Shard, primary: str, types: dict[str, TabletType]) -> None:
    """Nothing moved: same primary in the Shard record and the serving graph (serving), same
    tablet types, and the primary takes application writes."""
    await shard.create_test_table()
    assert await shard.primary_alias() == primary
    assert await shard.serving() == (primary, True)
    assert await shard.types() == types
    await shard.app_insert(primary, int(time.time_ns() % 10**15))


async def test_prs_to_a_named_replica_moves_the_primary(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    events: list[dict[str, object]] = []
    r = await planned_reparent_shard(
        shard.env, prs(shard, new_primary="zone1-102"), progress=events.append
    )
    assert (r.new_primary, r.old_primary, r.changed) == ("zone1-102", "zone1-101", True)
    assert r.write_unavailable_ms is not None and r.write_unavailable_ms > 0
    assert await shard.check_invariants() == "zone1-102"
    assert await shard.types() == {
        "zone1-101": TabletType.REPLICA,
        "zone1-102": TabletType.PRIMARY,
        "zone1-103": TabletType.REPLICA,
    }
    assert await shard.serving() == ("zone1-102", True)
    # The journal row of this PRS is on every tablet, the old primary included.
    for alias in shard.aliases:
        entry = (await read_journal(shard.admin(alias)))[0]
        assert (entry.action_name, entry.primary_alias, entry.time_created_ns) == (
            "PlannedReparentShard",
            "zone1-102",
            r.journal_time_ns,
        )
    # The old primary no longer takes application writes; the new one does.
    with pytest.raises(MysqlServerError):
        await shard.app_insert("zone1-101", 10**6)
    await writer.write(3)
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    # The workflow record and the progress stream tell the same story.
    record = await shard.store.get_workflow(r.workflow_id)
    assert record.status == WorkflowStatus.SUCCEEDED
    assert record.result["new_primary"] == "zone1-102"
    steps = [s.name for s in record.steps]
    assert steps.index("demote_primary") < steps.index("promote_elect")
    assert events[0]["event"] == "started" and events[-1]["event"] == "finished"
    assert await shard.store.get_lock(shard.keyspace, shard.shard) is None
    await shard.check_invariants()


async def test_prs_to_the_current_primary_changes_nothing(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    await planned_reparent_shard(shard.env, prs(shard, new_primary="zone1-102"))
    before = await shard.store.get_shard(shard.keyspace, shard.shard)
    r = await planned_reparent_shard(shard.env, prs(shard, new_primary="zone1-102"))
    assert (r.new_primary, r.old_primary, r.changed) == ("zone1-102", "zone1-102", False)
    after = await shard.store.get_shard(shard.keyspace, shard.shard)
    assert after.revision == before.revision
    assert await shard.check_invariants() == "zone1-102"


async def test_prs_without_target_picks_the_most_advanced_replica(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=4)
    await shard.create_test_table()
    writer = Writer(shard)
    # zone1-102 (first by alias) falls behind: its SQL thread stops, then rows are written.
    await shard.admin("zone1-102").execute("STOP SLAVE SQL_THREAD")
    await writer.write(3)
    await writer.wait_all_on("zone1-103")
    await writer.wait_all_on("zone1-104")
    # 102 cannot be chosen (behind), 103 and 104 tie: the lowest alias wins.
    r = await planned_reparent_shard(shard.env, prs(shard))
    assert r.new_primary == "zone1-103"
    # 102 was repointed (and restarted) like every other replica: it catches up.
    await writer.wait_all_on("zone1-102")
    assert await shard.check_invariants() == "zone1-103"


async def test_prs_without_target_stays_in_the_primarys_cell(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=4, cells=("zone1", "zone2"))
    # zone1-101 primary; zone2-102, zone1-103, zone2-104 replicas.
    r = await planned_reparent_shard(shard.env, prs(shard))
    assert r.new_primary == "zone1-103"
    assert await shard.check_invariants() == "zone1-103"


async def test_prs_avoid_primary_on_a_replica_is_a_no_op(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    r = await planned_reparent_shard(shard.env, prs(shard, avoid_primary="zone1-102"))
    assert (r.new_primary, r.changed) == ("zone1-101", False)
    assert await shard.check_invariants() == "zone1-101"


async def test_prs_avoid_primary_on_the_primary_moves_it(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    r = await planned_reparent_shard(shard.env, prs(shard, avoid_primary="zone1-101"))
    assert r.changed and r.old_primary == "zone1-101"
    assert r.new_primary in ("zone1-102", "zone1-103")
    assert await shard.check_invariants() == r.new_primary
    assert (await shard.tablet("zone1-101")).type == TabletType.REPLICA


async def test_prs_cross_cell_needs_allow_cross_cell_promotion(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3, cells=("zone1", "zone2"))
    types = await shard.types()
    with pytest.raises(PreconditionError, match="allow_cross_cell_promotion") as e:
        await planned_reparent_shard(shard.env, prs(shard, new_primary="zone2-102"))
    assert e.value.tablet == "zone2-102"
    await assert_unchanged(shard, "zone1-101", types)
    r = await planned_reparent_shard(
        shard.env, prs(shard, new_primary="zone2-102", allow_cross_cell_promotion=True)
    )
    assert r.new_primary == "zone2-102"
    assert await shard.check_invariants() == "zone2-102"


async def test_prs_refuses_when_expected_primary_does_not_match(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    types = await shard.types()
    with pytest.raises(PreconditionError, match="not the expected zone1-102"):
        await planned_reparent_shard(
            shard.env, prs(shard, new_primary="zone1-103", expected_primary="zone1-102")
        )
    await assert_unchanged(shard, "zone1-101", types)
    r = await planned_reparent_shard(
        shard.env, prs(shard, new_primary="zone1-103", expected_primary="zone1-101")
    )
    assert r.new_primary == "zone1-103"
    assert await shard.check_invariants() == "zone1-103"


async def test_prs_to_an_unknown_tablet_is_an_invalid_argument(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=2)
    types = await shard.types()
    with pytest.raises(InvalidArgumentError, match="zone1-999"):
        await planned_reparent_shard(shard.env, prs(shard, new_primary="zone1-999"))
    with pytest.raises(InvalidArgumentError, match="zone1-999"):
        await planned_reparent_shard(shard.env, prs(shard, avoid_primary="zone1-999"))
    with pytest.raises(InvalidArgumentError):
        await planned_reparent_shard(
            shard.env, prs(shard, new_primary="zone1-102", avoid_primary="zone1-101")
        )
    await assert_unchanged(shard, "zone1-101", types)
    await shard.check_invariants()


async def test_prs_refuses_when_a_tablet_does_not_answer(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    types = await shard.types()
    await shard.server("zone1-103").stop()
    with pytest.raises(PreconditionError, match="every tablet must answer"):
        await planned_reparent_shard(shard.env, prs(shard, new_primary="zone1-102"))
    await assert_unchanged(shard, "zone1-101", types)


async def test_disable_active_reparents_refuses_prs_ers_isp_but_not_ter(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    types = await shard.types()
    shard.env.settings.disable_active_reparents = True
    with pytest.raises(ActiveReparentsDisabledError, match="TabletExternallyReparented"):
        await planned_reparent_shard(shard.env, prs(shard, new_primary="zone1-102"))
    with pytest.raises(ActiveReparentsDisabledError):
        await emergency_reparent_shard(
            shard.env, EmergencyReparentOptions(shard.keyspace, shard.shard)
        )
    with pytest.raises(ActiveReparentsDisabledError):
        await init_shard_primary(
            shard.env,
            InitShardPrimaryOptions(shard.keyspace, shard.shard, "zone1-102", force=True),
        )
    await assert_unchanged(shard, "zone1-101", types)
    # An external tool moves the primary with plain SQL and reports it: that still works.
    old, new, other = (shard.admin(a) for a in ("zone1-101", "zone1-102", "zone1-103"))
    await old.set_read_only(True)
    await new.wait_for_position(await old.primary_position(), 5)
    await new.reset_replication()
    await new.set_read_only(False)
    for client in (old, other):
        await client.set_replication_source(
            shard.server("zone1-102").host, shard.server("zone1-102").port,
            user=shard.env.creds.user, password=shard.env.creds.password, semi_sync=False,
            from_own_binlog=client is old,
        )  # fmt: skip
    r = await tablet_externally_reparented(shard.env, ExternallyReparentedOptions("zone1-102"))
    assert r.changed and r.new_primary == "zone1-102"
    assert await shard.check_invariants() == "zone1-102"


async def test_prs_fails_with_nothing_changed_when_elect_cannot_catch_up(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    types = await shard.types()
    await shard.admin("zone1-102").execute("STOP SLAVE SQL_THREAD")
    writer = Writer(shard)
    await writer.write(1)
    started = time.monotonic()
    with pytest.raises(PreconditionError, match="cannot catch up") as e:
        await planned_reparent_shard(
            shard.env, prs(shard, new_primary="zone1-102", wait_replicas_timeout=2)
        )
    assert time.monotonic() - started < 5
    assert e.value.tablet == "zone1-102"
    await assert_unchanged(shard, "zone1-101", types)
    await shard.admin("zone1-102").execute("START SLAVE SQL_THREAD")
    await writer.wait_all_on("zone1-102")
    assert await shard.check_invariants() == "zone1-101"


async def test_prs_undoes_demotion_when_elect_cannot_catch_up(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    types = await shard.types()
    writer = Writer(shard)

    async def elect_falls_behind() -> None:
        # After the pre-demotion catch-up, before demotion: the primary still takes writes.
        await shard.admin("zone1-102").execute("STOP SLAVE SQL_THREAD")
        await writer.write(1)

    env = shard.with_faults(prs_before_demote=elect_falls_behind)
    started = time.monotonic()
    with pytest.raises(AbortedError, match="writable and serving again") as e:
        await planned_reparent_shard(
            env, prs(shard, new_primary="zone1-102", wait_replicas_timeout=2)
        )
    assert time.monotonic() - started < 6
    assert e.value.tablet == "zone1-102"
    record = await shard.store.get_workflow(
        next(w.id for w in await shard.store.list_workflows() if w.action.startswith("Planned"))
    )
    steps = {s.name: s.status for s in record.steps}
    assert steps["demote_primary"] == "done" and steps["undo_demotion"] == "done"
    assert "promote_elect" not in steps
    await assert_unchanged(shard, "zone1-101", types)
    await writer.write(2)
    await shard.admin("zone1-102").execute("START SLAVE SQL_THREAD")
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    assert await shard.check_invariants() == "zone1-101"


async def test_prs_under_writes_loses_no_acknowledged_row(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    results = []
    try:
        await writer.wait_acked(50)
        # Round the primary through every tablet and back: each former primary must resume
        # replication after its own history.
        for new_primary in ("zone1-102", "zone1-103", "zone1-101"):
            before = time.monotonic()
            r = await planned_reparent_shard(shard.env, prs(shard, new_primary=new_primary))
            await writer.wait_acked(30)
            results.append((r, writer.max_gap_ms(after=before)))
    finally:
        await writer.stop()
    print()
    for r, gap in results:
        print(
            f"PRS {r.old_primary} -> {r.new_primary} under writes: MySQL window "
            f"{r.write_unavailable_ms} ms, writer's longest gap {gap:.1f} ms, "
            f"PRS total {r.duration_ms} ms"
        )
    print(f"{len(writer.acked)} rows acknowledged, {writer.errors} refused")
    writer.check_errors("read_only")  # refused by each demoted primary, for a moment
    assert [r.new_primary for r, _ in results] == ["zone1-102", "zone1-103", "zone1-101"]
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
        assert await writer.missing_on(alias) == []
    assert await shard.check_invariants() == "zone1-101"


async def test_prs_with_semi_sync_under_writes_loses_no_acknowledged_row(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3, durability="semi_sync")
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    try:
        await writer.wait_acked(30)
        r = await planned_reparent_shard(shard.env, prs(shard, new_primary="zone1-103"))
        await writer.wait_acked(30)  # commits on the new primary get their acks
    finally:
        await writer.stop()
    print(
        f"\nPRS with semi_sync: MySQL window {r.write_unavailable_ms} ms, total {r.duration_ms} ms"
    )
    writer.check_errors("read_only")
    statuses = await shard.statuses()
    new, old = statuses["zone1-103"], statuses["zone1-101"]
    assert not isinstance(new, BaseException) and not isinstance(old, BaseException)
    assert new.semi_sync_primary and not new.semi_sync_replica
    assert old.semi_sync_replica and not old.semi_sync_primary
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    assert await shard.check_invariants() == "zone1-103"


async def test_prs_leaves_a_deliberately_stopped_replica_stopped(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await shard.admin("zone1-103").stop_replication()  # an operator stopped it on purpose
    r = await planned_reparent_shard(shard.env, prs(shard, new_primary="zone1-102"))
    assert r.warnings == ()
    status = await shard.admin("zone1-103").replication_status()
    # Repointed at the new primary, but not started.
    assert status is not None and not status.io_running and not status.sql_running
    assert status.source_port == shard.server("zone1-102").port
    await writer.write(2)
    await shard.admin("zone1-103").start_replication()
    await writer.wait_all_on("zone1-103")
    assert await shard.check_invariants() == "zone1-102"


async def test_prs_undoes_demotion_when_the_elect_dies_after_demotion(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    types = await shard.types()

    async def elect_dies() -> None:
        shard.server("zone1-102").kill()

    env = shard.with_faults(prs_after_demote=elect_dies)
    with pytest.raises(AbortedError, match="zone1-101 is writable and serving again"):
        await planned_reparent_shard(env, prs(shard, new_primary="zone1-102"))
    await assert_unchanged(shard, "zone1-101", types)
    assert await shard.check_invariants() == "zone1-101"


async def test_prs_whose_promotion_fails_half_way_fences_the_elect_before_undoing(
    shard_factory: ShardFactory,
) -> None:
    """The elect's promotion statements run on the real server (it is writable), then the
    connection fails before PRS learns the outcome. The undo fences the elect read-only first,
    then makes the old primary writable and serving again: never two writable servers, the
    topology unchanged, no acknowledged write lost."""
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    types = await shard.types()
    writer = Writer(shard)
    writer.start()
    env = shard.env_with()
    elect = env.mysql(await shard.tablet("zone1-102"))
    real_promote = elect.promote
    promoted: list[bool] = []
    watch = SplitBrainWatcher(shard)

    async def promote_then_lose_the_connection(**kw: Any) -> Any:
        await real_promote(**kw)
        promoted.append(not (await shard.admin("zone1-102").status()).read_only)
        await watch.wait_samples(3)  # the elect writable, for several samples
        raise MysqlUnreachableError("connection lost after the promotion statements")

    elect.promote = promote_then_lose_the_connection  # type: ignore[method-assign]
    old_primary = env.mysql(await shard.tablet("zone1-101"))
    real_set_read_only = old_primary.set_read_only
    writable_at_unfence: list[list[str]] = []

    async def unfence_checked(on: bool, **kw: Any) -> None:
        if not on:  # the undo makes the old primary writable: is the elect fenced by now?
            writable_at_unfence.append(await shard.writable())
        await real_set_read_only(on, **kw)

    old_primary.set_read_only = unfence_checked  # type: ignore[method-assign]
    try:
        await writer.wait_acked(20)
        async with watch:
            with pytest.raises(AbortedError, match="fenced read-only") as e:
                await planned_reparent_shard(env, prs(shard, new_primary="zone1-102"))
            assert e.value.tablet == "zone1-102"
            assert promoted == [True], "the elect was not really made writable"
            assert writable_at_unfence == [[]], (
                f"writable when the old primary was made writable again: {writable_at_unfence}"
            )
            assert await shard.check_invariants() == "zone1-101"
            await writer.wait_acked(20)  # the old primary takes writes again
    finally:
        await writer.stop()
    writer.check_errors("read_only")  # refused by the demoted primary meanwhile
    record = await shard.store.get_workflow(
        next(w.id for w in await shard.store.list_workflows() if w.action.startswith("Planned"))
    )
    steps = {s.name: s.status for s in record.steps}
    assert steps["promote_elect"] == "failed" and steps["undo_failed_promotion"] == "done", steps
    assert (await shard.admin("zone1-102").status()).read_only
    await assert_unchanged(shard, "zone1-101", types)
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    assert await writer.missing_on("zone1-101") == []
    print(f"failed promotion undone: {watch.summary()}; {len(writer.acked)} writes acknowledged, "
          f"failures {dict(writer.error_kinds)}")  # fmt: skip


async def test_prs_reports_a_replica_that_cannot_replicate_without_waiting_for_it(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    for alias in ("zone1-102", "zone1-103"):
        await writer.wait_all_on(alias)

    async def diverge() -> None:
        # After the promotion, before the repointing: 103 holds a GTID the new primary never
        # had, so its repointed IO thread stops with error 1236.
        await shard.diverge("zone1-103")

    env = shard.with_faults(prs_after_promote=diverge)
    started = time.monotonic()
    with pytest.raises(PartialFailureError, match="zone1-103") as e:
        await planned_reparent_shard(
            env, prs(shard, new_primary="zone1-102", wait_replicas_timeout=20)
        )
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"PRS took {elapsed:.1f}s: it waited for a replica that cannot replicate"
    assert "zone1-102 is the new primary" in str(e.value) and "1236" in str(e.value)
    record = await shard.store.get_workflow(
        next(w.id for w in await shard.store.list_workflows() if w.action.startswith("Planned"))
    )
    (late,) = [w for w in record.result["warnings"] if w.startswith("zone1-103:")]
    assert "IO thread stopped with error 1236" in late
    assert await shard.primary_alias() == "zone1-102"
    assert await shard.serving() == ("zone1-102", True)
    await writer.write(2)
    # The old primary was repointed and is waited for as before: it has the new rows.
    await writer.wait_all_on("zone1-101")
