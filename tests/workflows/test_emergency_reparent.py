"""EmergencyReparentShard against real etcd and MariaDB servers, the primary SIGKILLed."""

from __future__ import annotations

import dataclasses
import time

import pytest

from mysqlctl.journal import read_journal
from tests.fixtures_cluster import Shard, ShardFactory, Writer, eventually
from tests.helpers.split_brain import SplitBrainWatcher
from topo.records import TabletType
from workflows.emergency_reparent import (
    ACTION,
    EmergencyReparentOptions,
    emergency_reparent_shard,
)
from workflows.errors import InvalidArgumentError, PartialFailureError, PreconditionError
from workflows.replication import reparent_tablet


def ers(shard: Shard, **kw: object) -> EmergencyReparentOptions:
    kw.setdefault("wait_replicas_timeout", 5.0)
    return EmergencyReparentOptions(shard.keyspace, shard.shard, **kw)  # type: ignore[arg-type]


async def fall_behind(shard: Shard, alias: str) -> None:
    """`alias` stops receiving from the primary (IO thread stopped, SQL thread applying)."""
    await shard.admin(alias).execute("STOP SLAVE IO_THREAD")


async def test_ers_after_primary_crash_promotes_the_most_advanced_replica(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    await writer.wait_acked(20)
    await fall_behind(shard, "zone1-102")  # 102 would win a tie on alias; make it lag
    await writer.wait_acked(20)
    await writer.stop()
    last = writer.ids[-1]
    await writer.wait_all_on("zone1-103")
    assert last not in await shard.row_ids("zone1-102")
    shard.server("zone1-101").kill()

    r = await emergency_reparent_shard(shard.env, ers(shard))
    print(f"\nERS after SIGKILL of the primary: {r.duration_ms} ms (promoted after "
          f"{r.write_unavailable_ms} ms), {len(writer.acked)} rows acknowledged before")  # fmt: skip
    assert (r.new_primary, r.old_primary, r.changed) == ("zone1-103", "zone1-101", True)
    assert r.warnings and "zone1-101" in r.warnings[0]  # the dead primary is reported
    assert last in await shard.row_ids("zone1-103")
    assert await writer.missing_on("zone1-103") == []
    # The lagging replica now replicates from the new primary and gets everything.
    await writer.wait_all_on("zone1-102")
    assert await shard.types() == {
        "zone1-101": TabletType.SPARE,
        "zone1-102": TabletType.REPLICA,
        "zone1-103": TabletType.PRIMARY,
    }
    assert await shard.serving() == ("zone1-103", True)
    entry = (await read_journal(shard.admin("zone1-102")))[0]
    assert (entry.action_name, entry.primary_alias) == ("EmergencyReparentShard", "zone1-103")
    # Applications write to the new primary through the serving graph.
    await writer.write(3)
    await writer.wait_all_on("zone1-102")
    assert await shard.check_invariants() == "zone1-103"


async def test_ers_named_elect_that_is_behind_catches_up_first(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=4)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    await writer.wait_all_on("zone1-103")
    await fall_behind(shard, "zone1-103")
    await writer.write(5)
    for alias in ("zone1-102", "zone1-104"):
        await writer.wait_all_on(alias)
    assert await writer.missing_on("zone1-103") == writer.ids[-5:]
    shard.server("zone1-101").kill()

    r = await emergency_reparent_shard(shard.env, ers(shard, new_primary="zone1-103"))
    assert r.new_primary == "zone1-103"
    record = await shard.store.get_workflow(r.workflow_id)
    assert "elect_catches_up" in [s.name for s in record.steps]
    assert await writer.missing_on("zone1-103") == []
    await writer.write(3)
    for alias in ("zone1-102", "zone1-104"):
        await writer.wait_all_on(alias)
    assert await shard.check_invariants() == "zone1-103"


async def test_ers_leaves_ignored_replicas_alone(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=4)
    old = shard.server("zone1-101")
    shard.server("zone1-101").kill()
    r = await emergency_reparent_shard(shard.env, ers(shard, ignore_replicas=("zone1-102",)))
    assert r.new_primary == "zone1-103"  # 102 would have won the tie on alias
    status = await shard.admin("zone1-102").replication_status()
    assert status is not None and status.source_port == old.port  # untouched
    # ReparentTablet brings the ignored replica over to the new primary.
    await reparent_tablet(shard.env, "zone1-102")
    assert await shard.check_invariants() == "zone1-103"


async def test_ers_rejects_an_unknown_ignored_tablet(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=2)
    with pytest.raises(InvalidArgumentError, match="zone1-999"):
        await emergency_reparent_shard(shard.env, ers(shard, ignore_replicas=("zone1-999",)))
    assert await shard.check_invariants() == "zone1-101"


async def test_ers_prevent_cross_cell_promotion_keeps_the_primary_in_its_cell(
    shard_factory: ShardFactory,
) -> None:
    # zone1-101 primary; zone2-102, zone1-103, zone2-104 replicas. The only replica in the
    # primary's cell is behind the two in zone2.
    shard = await shard_factory(tablets=4, cells=("zone1", "zone2"))
    await shard.create_test_table()
    writer = Writer(shard)
    await fall_behind(shard, "zone1-103")
    await writer.write(5)
    for alias in ("zone2-102", "zone2-104"):
        await writer.wait_all_on(alias)
    shard.server("zone1-101").kill()

    r = await emergency_reparent_shard(shard.env, ers(shard, prevent_cross_cell_promotion=True))
    assert r.new_primary == "zone1-103"
    assert await writer.missing_on("zone1-103") == []
    for alias in ("zone2-102", "zone2-104"):
        await writer.wait_all_on(alias)
    assert await shard.check_invariants() == "zone1-103"


async def test_ers_across_cells_without_prevent_cross_cell(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3, cells=("zone1", "zone2"))
    await shard.create_test_table()
    writer = Writer(shard)
    await fall_behind(shard, "zone1-103")
    await writer.write(3)
    await writer.wait_all_on("zone2-102")
    shard.server("zone1-101").kill()
    with pytest.raises(PreconditionError, match="cross-cell"):
        await emergency_reparent_shard(
            shard.env, ers(shard, new_primary="zone2-102", prevent_cross_cell_promotion=True)
        )
    r = await emergency_reparent_shard(shard.env, ers(shard))
    assert r.new_primary == "zone2-102"
    await writer.wait_all_on("zone1-103")
    assert await shard.check_invariants() == "zone2-102"


async def test_ers_refuses_when_only_rdonly_tablets_are_left(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    for alias in ("zone1-102", "zone1-103"):
        await shard.store.update_tablet_fields(
            alias, lambda t: dataclasses.replace(t, type=TabletType.RDONLY)
        )
    shard.server("zone1-101").kill()
    before = await shard.store.get_shard(shard.keyspace, shard.shard)
    with pytest.raises(PreconditionError, match=r"no promotable candidate.*zone1-102 \(rdonly\)"):
        await emergency_reparent_shard(shard.env, ers(shard))
    after = await shard.store.get_shard(shard.keyspace, shard.shard)
    assert after == before and after.revision == before.revision
    assert (await shard.tablet("zone1-101")).type == TabletType.PRIMARY
    # Once a replica is promotable again, ERS goes through.
    await shard.store.update_tablet_fields(
        "zone1-103", lambda t: dataclasses.replace(t, type=TabletType.REPLICA)
    )
    r = await emergency_reparent_shard(shard.env, ers(shard))
    assert r.new_primary == "zone1-103"
    assert await shard.check_invariants() == "zone1-103"


async def test_ers_never_promotes_a_replica_with_errant_transactions(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    for alias in ("zone1-102", "zone1-103"):
        await writer.wait_all_on(alias)
    # A local write on zone1-102 (the admin user bypasses read_only), in its own replication
    # domain so that replication in domain 0 goes on: 102 now holds a transaction the shard
    # never had, and would win the tie with 103 on alias.
    errant = shard.admin("zone1-102")
    await errant.execute(
        "SET SESSION gtid_domain_id = 7; INSERT INTO test.acked (id, t) VALUES (999999, 0)"
    )
    status = await errant.status()
    assert not status.errant.is_empty()
    shard.server("zone1-101").kill()

    with pytest.raises(PreconditionError, match="errant") as e:
        await emergency_reparent_shard(shard.env, ers(shard, new_primary="zone1-102"))
    assert e.value.tablet == "zone1-102"
    r = await emergency_reparent_shard(shard.env, ers(shard))
    assert r.new_primary == "zone1-103"
    assert await writer.missing_on("zone1-103") == []
    assert 999999 not in await shard.row_ids("zone1-103")
    assert await shard.check_invariants() == "zone1-103"


async def test_ers_with_semi_sync_refuses_while_a_replica_is_down(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3, durability="semi_sync")
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(5)  # each acknowledged by at least one replica
    shard.server("zone1-103").kill()
    shard.server("zone1-101").kill()
    before = await shard.store.get_shard(shard.keyspace, shard.shard)
    with pytest.raises(PreconditionError, match="semi_sync") as e:
        await emergency_reparent_shard(shard.env, ers(shard))
    assert e.value.tablet == "zone1-103"
    after = await shard.store.get_shard(shard.keyspace, shard.shard)
    assert after.revision == before.revision
    # Once every replica answers again, nothing acknowledged can be out of reach: ERS goes on.
    await shard.server("zone1-103").start_again()
    r = await emergency_reparent_shard(shard.env, ers(shard))
    assert r.new_primary in ("zone1-102", "zone1-103")
    assert await writer.missing_on(r.new_primary) == []
    other = "zone1-103" if r.new_primary == "zone1-102" else "zone1-102"
    await writer.wait_all_on(other)
    status = await shard.admin(r.new_primary).status()
    assert status.semi_sync_primary
    # A semi-sync commit on the new primary is acknowledged by the remaining replica.
    await writer.write(1)
    await writer.wait_all_on(other)
    assert await shard.check_invariants() == r.new_primary


async def test_ers_with_semi_sync_succeeds_when_all_replicas_answer(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3, durability="semi_sync")
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    await writer.wait_acked(30)
    shard.server("zone1-101").kill()  # mid-stream: every acknowledged row is on a replica

    async def writer_stuck() -> bool:
        return writer.errors > 0

    await eventually(writer_stuck, 5, "the writer to notice the dead primary")
    await writer.stop()
    # The primary's server is gone (or a commit waited for an ACK that never came).
    writer.check_errors("unreachable", "timeout")
    r = await emergency_reparent_shard(shard.env, ers(shard))
    assert r.new_primary in ("zone1-102", "zone1-103")
    assert await writer.missing_on(r.new_primary) == []
    assert await shard.check_invariants() == r.new_primary
    await writer.write(5)  # the application writes on the new primary


async def test_ers_on_a_live_primary_changes_nothing_unless_a_new_primary_is_named(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(2)
    for alias in ("zone1-102", "zone1-103"):
        await writer.wait_all_on(alias)
        await fall_behind(shard, alias)
    await writer.write(3)  # only on the old primary: both replicas stopped receiving

    noop = await emergency_reparent_shard(shard.env, ers(shard))
    assert (noop.new_primary, noop.changed) == ("zone1-101", False)
    assert await shard.serving() == ("zone1-101", True)

    # The old primary answers: it is fenced before the elect is promoted, and stays fenced.
    async with SplitBrainWatcher(shard) as watch:
        r = await emergency_reparent_shard(shard.env, ers(shard, new_primary="zone1-102"))
        assert (r.new_primary, r.old_primary, r.changed) == ("zone1-102", "zone1-101", True)
        await watch.wait_samples(3)  # samples of both after the promotion
    # The elect caught up from the fenced old primary: its last rows are not lost.
    assert await writer.missing_on("zone1-102") == []
    old = await shard.admin("zone1-101").status()
    assert old.read_only
    assert (await shard.tablet("zone1-101")).type == TabletType.SPARE
    await writer.wait_all_on("zone1-103")
    assert await shard.check_invariants() == "zone1-102"


async def test_ers_reports_a_replica_that_cannot_replicate_without_waiting_for_it(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    for alias in ("zone1-102", "zone1-103"):
        await writer.wait_all_on(alias)
    shard.server("zone1-101").kill()

    async def diverge() -> None:
        # Once the elect is chosen: 103 holds a GTID the elect never had (the state of a
        # diverged old primary brought back as a replica), so its repointed IO thread stops
        # with error 1236 and the journal row can never reach it.
        await shard.diverge("zone1-103")

    env = shard.with_faults(ers_before_promote=diverge)
    started = time.monotonic()
    with pytest.raises(PartialFailureError, match="zone1-103") as e:
        await emergency_reparent_shard(
            env, ers(shard, new_primary="zone1-102", wait_replicas_timeout=20)
        )
    elapsed = time.monotonic() - started
    print(f"\nERS with a replica failing with 1236: {elapsed * 1000:.0f} ms")
    assert elapsed < 5, f"ERS took {elapsed:.1f}s: it waited for a replica that cannot replicate"
    assert "zone1-102 is the new primary" in str(e.value)
    assert "1236" in str(e.value)
    # Reported as a late replica always was: in the result's warnings, by alias.
    record = await shard.store.get_workflow(
        next(w.id for w in await shard.store.list_workflows() if w.action == ACTION)
    )
    (late,) = [w for w in record.result["warnings"] if w.startswith("zone1-103:")]
    assert "IO thread stopped with error 1236" in late
    # The reparent itself is complete: the elect is the serving primary and takes writes.
    assert await shard.primary_alias() == "zone1-102"
    assert await shard.serving() == ("zone1-102", True)
    await writer.write(2)
