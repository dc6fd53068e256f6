"""InitShardPrimary against real etcd and MariaDB: the fixture initialises every shard with it;
these tests check what it left behind and how it treats a shard that already has a primary."""

from __future__ import annotations

import pytest

from mysqlctl.journal import read_journal
from tests.fixtures_cluster import ShardFactory, Writer
from topo.records import TabletType, WorkflowStatus
from workflows.errors import ActiveReparentsDisabledError, PreconditionError
from workflows.init_shard_primary import InitShardPrimaryOptions, init_shard_primary


async def test_isp_makes_the_first_tablet_primary_and_the_others_its_replicas(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    assert await shard.check_invariants() == "zone1-101"
    assert await shard.types() == {
        "zone1-101": TabletType.PRIMARY,
        "zone1-102": TabletType.REPLICA,
        "zone1-103": TabletType.REPLICA,
    }
    record = await shard.store.get_shard(shard.keyspace, shard.shard)
    assert record.is_primary_serving and record.primary_term_start_time > 0
    assert (await shard.tablet("zone1-101")).primary_term_start_time == (
        record.primary_term_start_time
    )
    graph = await shard.store.get_srv_keyspace("zone1", shard.keyspace)
    serving = graph.shard(shard.shard)
    assert serving is not None and serving.primary is not None
    assert serving.primary.alias == "zone1-101" and serving.primary_serving
    assert sorted(r.alias for r in serving.replicas) == ["zone1-102", "zone1-103"]
    # The journal row was written on the primary and replicated everywhere.
    for alias in shard.aliases:
        (entry,) = await read_journal(shard.admin(alias))
        assert (entry.action_name, entry.primary_alias) == ("InitShardPrimary", "zone1-101")
    # The application can write through the serving graph, and the rows replicate.
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(5)
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    workflows = await shard.store.list_workflows()
    assert [w.status for w in workflows if w.action == "InitShardPrimary"] == [
        WorkflowStatus.SUCCEEDED
    ]
    await shard.check_invariants()


async def test_isp_refuses_to_reinitialise_without_force_naming_the_current_primary(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    before = await shard.store.get_shard(shard.keyspace, shard.shard)
    with pytest.raises(PreconditionError, match="already has primary zone1-101") as e:
        await init_shard_primary(
            shard.env, InitShardPrimaryOptions(shard.keyspace, shard.shard, "zone1-102")
        )
    assert e.value.tablet == "zone1-101"
    after = await shard.store.get_shard(shard.keyspace, shard.shard)
    assert after == before and after.revision == before.revision
    assert await shard.check_invariants() == "zone1-101"


async def test_isp_with_force_moves_the_primary_and_keeps_every_row(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(5)
    await writer.wait_all_on("zone1-102")
    result = await init_shard_primary(
        shard.env,
        InitShardPrimaryOptions(
            shard.keyspace, shard.shard, "zone1-102", force=True, wait_replicas_timeout=5
        ),
    )
    assert (result.new_primary, result.old_primary, result.changed) == (
        "zone1-102",
        "zone1-101",
        True,
    )
    assert await shard.check_invariants() == "zone1-102"
    assert (await shard.tablet("zone1-101")).type == TabletType.REPLICA
    # The former primary replicates from the new one without re-applying its own history.
    await writer.write(5)
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    await shard.check_invariants()


async def test_isp_is_refused_when_active_reparents_are_disabled(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=2)
    shard.env.settings.disable_active_reparents = True
    with pytest.raises(ActiveReparentsDisabledError, match="disable_active_reparents"):
        await init_shard_primary(
            shard.env,
            InitShardPrimaryOptions(shard.keyspace, shard.shard, "zone1-102", force=True),
        )
    assert await shard.check_invariants() == "zone1-101"


async def test_forced_init_onto_a_tablet_that_is_behind_is_refused_and_undone(
    shard_factory,
) -> None:  # type: ignore[no-untyped-def]
    """Re-initialising a live shard onto a replica that lacks rows would lose them: refused,
    the fence undone, the old primary writable again, topology unchanged."""
    from workflows.errors import PreconditionError
    from workflows.init_shard_primary import InitShardPrimaryOptions, init_shard_primary

    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    await shard.admin("zone1-102").stop_replication()
    await shard.admin("zone1-101").execute("INSERT INTO test.acked (id, t) VALUES (1, 0)")
    with pytest.raises(PreconditionError, match="lacks transactions"):
        await init_shard_primary(
            shard.env, InitShardPrimaryOptions("commerce", "0", "zone1-102", force=True)
        )
    assert await shard.primary_alias() == "zone1-101"
    assert not (await shard.admin("zone1-101").status()).read_only
    assert (await shard.admin("zone1-102").status()).read_only
