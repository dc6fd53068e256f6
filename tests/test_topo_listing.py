"""The listings the health checks make every cycle, against a real etcd: one range read for
all tablets (reusing unchanged records), one for keyspaces, shards and locks."""

from __future__ import annotations

import dataclasses

from topo.lock import ShardLock
from topo.records import Keyspace, Shard, Tablet, TabletType
from topo.store import TopoStore


def tablet(alias: str, ks: str = "commerce", shard: str = "0", type: str = "replica") -> Tablet:
    return Tablet(
        alias=alias,
        keyspace=ks,
        shard=shard,
        type=TabletType.parse(type),
        mysql_host="127.0.0.1",
        mysql_port=3306,
    )


async def test_all_cells_in_one_read_sorted_and_filtered(topo: TopoStore) -> None:
    await topo.create_keyspace(Keyspace(name="commerce"))
    # a keyspace named like a record kind must not confuse the key filters
    await topo.create_keyspace(Keyspace(name="Tablet"))
    await topo.create_shard(Shard(keyspace="commerce", name="0"))
    await topo.create_shard(Shard(keyspace="Tablet", name="0"))
    for alias in ("zone2-7", "zone1-101", "zone1-20"):
        await topo.create_tablet(tablet(alias))
    await topo.create_tablet(tablet("zone1-5", ks="Tablet", type="primary"))
    await topo.rebuild_serving_graph("Tablet")  # cells/<cell>/serving/Tablet ends with /Tablet
    got = await topo.list_tablets()
    assert [t.alias for t in got] == ["zone1-5", "zone1-20", "zone1-101", "zone2-7"]
    assert [t.alias for t in await topo.list_tablets(cell="zone2")] == ["zone2-7"]
    assert [t.alias for t in await topo.list_tablets(keyspace="Tablet")] == ["zone1-5"]
    assert await topo.list_cells() == ["zone1", "zone2"]


async def test_unchanged_records_are_reused_changed_ones_reread(topo: TopoStore) -> None:
    await topo.create_keyspace(Keyspace(name="commerce"))
    await topo.create_shard(Shard(keyspace="commerce", name="0"))
    for alias in ("zone1-1", "zone1-2", "zone1-3"):
        await topo.create_tablet(tablet(alias))
    first = {t.alias: t for t in await topo.list_tablets()}
    await topo.update_tablet_fields(
        "zone1-2", lambda t: dataclasses.replace(t, type=TabletType.SPARE)
    )
    await topo.delete_tablet("zone1-3")
    second = {t.alias: t for t in await topo.list_tablets()}
    assert second.keys() == {"zone1-1", "zone1-2"}
    assert second["zone1-1"] is first["zone1-1"]  # same key, same mod_revision: not parsed again
    assert second["zone1-2"].type == TabletType.SPARE
    assert second["zone1-2"].revision > first["zone1-2"].revision
    # another store (another process) sees the same
    other = TopoStore([topo.kv.endpoint], root=topo.root)
    try:
        assert await other.list_tablets() == list(second.values())
    finally:
        await other.close()


async def test_shards_and_locks_in_one_read(topo: TopoStore) -> None:
    for ks in ("b", "a"):
        await topo.create_keyspace(Keyspace(name=ks))
    for ks, shard in (("b", "-80"), ("a", "0"), ("b", "80-")):
        await topo.create_shard(Shard(keyspace=ks, name=shard))
    async with ShardLock(topo, "b", "80-", action="Test"):
        keyspaces, shards, locks = await topo.list_shards_and_locks()
        assert sorted(k.name for k in keyspaces) == ["a", "b"]
        assert [s.key for s in shards] == ["a/0", "b/-80", "b/80-"]
        assert [(li.keyspace, li.shard, li.action) for li in locks] == [("b", "80-", "Test")]
        assert locks == await topo.list_locks()
    keyspaces, shards, locks = await topo.list_shards_and_locks()
    assert locks == [] and len(shards) == 3
    # a shard whose keyspace record is gone is left out, as list_shards leaves it out
    await topo.kv.delete(topo.keyspace_key("a"))
    _, shards, _ = await topo.list_shards_and_locks()
    assert [s.key for s in shards] == ["b/-80", "b/80-"]


async def test_unchanged_shards_and_keyspaces_are_reused(topo: TopoStore) -> None:
    await topo.create_keyspace(Keyspace(name="commerce"))
    for name in ("-80", "80-"):
        await topo.create_shard(Shard(keyspace="commerce", name=name))
    ks1, shards1, _ = await topo.list_shards_and_locks()
    await topo.update_shard_fields(
        "commerce", "80-", lambda s: dataclasses.replace(s, is_primary_serving=False)
    )
    ks2, shards2, _ = await topo.list_shards_and_locks()
    assert ks2[0] is ks1[0]  # same key, same mod_revision: not parsed again
    assert shards2[0] is shards1[0]
    assert shards2[1] is not shards1[1] and not shards2[1].is_primary_serving
    assert shards2[1].revision > shards1[1].revision
