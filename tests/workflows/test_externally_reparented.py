"""TabletExternallyReparented: an outside tool moved the primary with plain SQL; the topology
catches up. Real etcd and MariaDB servers."""

from __future__ import annotations

import pytest

from mysqlctl.journal import read_journal, wait_for_journal_entry
from tests.fixtures_cluster import Shard, ShardFactory, Writer
from topo.records import TabletType
from workflows.errors import PreconditionError
from workflows.externally_reparented import (
    ExternallyReparentedOptions,
    tablet_externally_reparented,
)
from workflows.replication import reparent_tablet


async def external_switch(shard: Shard, old: str, new: str, *, old_alive: bool = True) -> None:
    """What an outside failover tool does, in plain SQL (no orchestrator code involved)."""
    o, n = shard.admin(old), shard.admin(new)
    if old_alive:
        await o.execute("SET GLOBAL read_only = 1")
        row = await o.fetch_one("SELECT @@GLOBAL.gtid_binlog_pos AS pos")
        assert row is not None
        await n.execute("SELECT MASTER_GTID_WAIT(%s, 10)", (row["pos"],))
    await n.execute("STOP SLAVE")
    await n.execute("RESET SLAVE ALL")
    await n.execute("SET GLOBAL read_only = 0")
    source = shard.server(new)
    change = (
        f"CHANGE MASTER TO MASTER_HOST = '{source.host}', MASTER_PORT = {source.port}, "
        f"MASTER_USER = '{source.admin_user}', MASTER_PASSWORD = '{source.admin_password}', "
        "MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1"
    )
    for alias in shard.aliases:
        if alias == new or (alias == old and not old_alive):
            continue
        c = shard.admin(alias)
        await c.execute("STOP SLAVE")
        if alias == old:
            await c.execute("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")
        await c.execute(change)
        await c.execute("START SLAVE")


async def test_ter_records_a_switch_done_with_plain_sql(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    await external_switch(shard, "zone1-101", "zone1-102")
    # Before TER the topology still names the old primary.
    assert await shard.primary_alias() == "zone1-101"

    r = await tablet_externally_reparented(shard.env, ExternallyReparentedOptions("zone1-102"))
    assert (r.new_primary, r.old_primary, r.changed) == ("zone1-102", "zone1-101", True)
    assert await shard.types() == {
        "zone1-101": TabletType.REPLICA,
        "zone1-102": TabletType.PRIMARY,
        "zone1-103": TabletType.REPLICA,
    }
    record = await shard.store.get_shard(shard.keyspace, shard.shard)
    assert record.primary_alias == "zone1-102" and record.is_primary_serving
    assert await shard.serving() == ("zone1-102", True)
    graph = await shard.store.get_srv_keyspace("zone1", shard.keyspace)
    serving = graph.shard(shard.shard)
    assert serving is not None
    assert sorted(e.alias for e in serving.replicas) == ["zone1-101", "zone1-103"]
    # TER writes the journal row on the new primary and does not wait for it to replicate.
    assert r.journal_time_ns is not None
    await wait_for_journal_entry(shard.admin("zone1-103"), r.journal_time_ns, 5)
    entry = (await read_journal(shard.admin("zone1-103")))[0]
    assert (entry.action_name, entry.primary_alias) == ("TabletExternallyReparented", "zone1-102")
    # Applications follow the serving graph to the new primary.
    await writer.write(3)
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    assert await shard.check_invariants() == "zone1-102"
    # Reporting it again changes nothing.
    again = await tablet_externally_reparented(shard.env, ExternallyReparentedOptions("zone1-102"))
    assert again.changed is False


async def test_ter_with_the_old_primary_dead_makes_it_spare(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    await writer.wait_all_on("zone1-103")
    shard.server("zone1-101").kill()
    await external_switch(shard, "zone1-101", "zone1-103", old_alive=False)

    r = await tablet_externally_reparented(shard.env, ExternallyReparentedOptions("zone1-103"))
    assert (r.new_primary, r.old_primary) == ("zone1-103", "zone1-101")
    assert await shard.types() == {
        "zone1-101": TabletType.SPARE,
        "zone1-102": TabletType.REPLICA,
        "zone1-103": TabletType.PRIMARY,
    }
    assert await shard.serving() == ("zone1-103", True)
    await writer.write(2)
    await writer.wait_all_on("zone1-102")
    assert await shard.check_invariants() == "zone1-103"


async def test_ter_refuses_a_tablet_that_still_replicates(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    before = await shard.store.get_shard(shard.keyspace, shard.shard)
    with pytest.raises(PreconditionError, match="still replicates") as e:
        await tablet_externally_reparented(shard.env, ExternallyReparentedOptions("zone1-102"))
    assert e.value.tablet == "zone1-102"
    assert (await shard.store.get_shard(shard.keyspace, shard.shard)).revision == before.revision
    assert await shard.check_invariants() == "zone1-101"


async def test_ter_refuses_a_tablet_that_is_read_only(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    types = await shard.types()
    # Half a switch: replication reset, but the tool never made it writable.
    await shard.admin("zone1-102").execute("STOP SLAVE")
    await shard.admin("zone1-102").execute("RESET SLAVE ALL")
    with pytest.raises(PreconditionError, match="read-only") as e:
        await tablet_externally_reparented(shard.env, ExternallyReparentedOptions("zone1-102"))
    assert e.value.tablet == "zone1-102"
    assert await shard.primary_alias() == "zone1-101"
    assert await shard.types() == types
    # The half-switched tablet goes back to replicating from the real primary.
    await reparent_tablet(shard.env, "zone1-102")
    assert await shard.check_invariants() == "zone1-101"


async def test_ter_fences_an_old_primary_left_writable(shard_factory) -> None:  # type: ignore[no-untyped-def]
    """An outside tool promoted zone1-102 but left zone1-101 writable: TER makes 101 read-only
    so that only one server takes writes."""
    from workflows.externally_reparented import (
        ExternallyReparentedOptions,
        tablet_externally_reparented,
    )

    shard = await shard_factory(tablets=3)
    new = shard.admin("zone1-102")
    await new.stop_replication()
    await new.reset_replication()
    await new.set_read_only(False)
    assert not (await shard.admin("zone1-101").status()).read_only
    result = await tablet_externally_reparented(shard.env, ExternallyReparentedOptions("zone1-102"))
    assert result.new_primary == "zone1-102"
    assert (await shard.admin("zone1-101").status()).read_only
    statuses = await shard.statuses()
    writable = [a for a, s in statuses.items() if not s.read_only]  # type: ignore[union-attr]
    assert writable == ["zone1-102"]
