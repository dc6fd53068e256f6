"""The topology store against a real etcd: records, compare-and-swap, serving graph, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from orchestrator.local.ports import free_port
from topo.alias import TabletAlias, parse_keyspace_shard, shard_names
from topo.errors import (
    BadVersionError,
    InvalidArgumentError,
    NodeExistsError,
    NoNodeError,
    TopoUnavailableError,
)
from topo.records import Keyspace, Shard, Tablet, TabletType
from topo.store import TopoStore


async def make_shard(topo: TopoStore, ks: str = "commerce", shard: str = "0") -> Shard:
    try:
        await topo.create_keyspace(Keyspace(name=ks))
    except NodeExistsError:
        pass
    return await topo.create_shard(Shard(keyspace=ks, name=shard))


def tablet(alias: str, ks: str = "commerce", shard: str = "0", type: str = "replica") -> Tablet:
    return Tablet(
        alias=alias, keyspace=ks, shard=shard, type=TabletType.parse(type),
        mysql_host="127.0.0.1", mysql_port=3306,
    )  # fmt: skip


async def test_records_round_trip_with_revisions(topo: TopoStore) -> None:
    shard = await make_shard(topo)
    assert shard.revision > 0
    t = await topo.create_tablet(tablet("zone1-101"))
    got = await topo.get_tablet("zone1-101")
    assert got == t and got.revision == t.revision
    assert [s.name for s in await topo.list_shards("commerce")] == ["0"]
    assert [k.name for k in await topo.list_keyspaces()] == ["commerce"]


async def test_update_with_stale_revision_is_refused(topo: TopoStore) -> None:
    shard = await make_shard(topo)
    await topo.update_shard(dataclasses.replace(shard, primary_alias="zone1-101"))
    with pytest.raises(BadVersionError):
        await topo.update_shard(dataclasses.replace(shard, primary_alias="zone1-102"))
    assert (await topo.get_shard("commerce", "0")).primary_alias == "zone1-101"


async def test_concurrent_read_modify_write_loses_no_update(topo: TopoStore) -> None:
    """Two writers increment one field 100 times each through update_shard_fields: 200."""
    await make_shard(topo)
    other = TopoStore(topo.kv.endpoints and [topo.kv.endpoint], root=topo.root)

    def bump(s: Shard) -> Shard:
        return dataclasses.replace(s, primary_term_start_time=s.primary_term_start_time + 1)

    async def writer(store: TopoStore) -> None:
        for _ in range(100):
            await store.update_shard_fields("commerce", "0", bump)

    try:
        await asyncio.gather(writer(topo), writer(other))
    finally:
        await other.close()
    assert (await topo.get_shard("commerce", "0")).primary_term_start_time == 200


async def test_create_twice_is_node_exists(topo: TopoStore) -> None:
    await make_shard(topo)
    with pytest.raises(NodeExistsError):
        await topo.create_shard(Shard(keyspace="commerce", name="0"))


async def test_unknown_objects_are_no_node(topo: TopoStore) -> None:
    with pytest.raises(NoNodeError, match="keyspace nope"):
        await topo.get_keyspace("nope")
    with pytest.raises(NoNodeError, match="keyspace nope"):
        await topo.create_shard(Shard(keyspace="nope", name="0"))
    await make_shard(topo)
    with pytest.raises(NoNodeError, match="shard commerce/-80"):
        await topo.create_tablet(tablet("zone1-101", shard="-80"))
    with pytest.raises(NoNodeError, match="tablet zone1-999"):
        await topo.get_tablet("zone1-999")


@pytest.mark.parametrize(
    "bad", ["", "zone1", "zone1-", "-101", "Zone1-101", "zone1-abc", "zone1-101-2", "zone 1-101"]
)
def test_malformed_alias_is_invalid_argument(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="malformed tablet alias"):
        TabletAlias.parse(bad)


@pytest.mark.parametrize(
    "bad", ["commerce", "commerce/", "/0", "commerce/0/1", "commerce/zz", "commerce/80-40"]
)
def test_malformed_keyspace_shard_is_invalid_argument(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_keyspace_shard(bad)


def test_shard_names_follow_key_ranges() -> None:
    assert shard_names(1) == ["0"]
    assert shard_names(2) == ["-80", "80-"]
    assert shard_names(4) == ["-40", "40-80", "80-c0", "c0-"]
    with pytest.raises(InvalidArgumentError):
        shard_names(3)


def test_bad_record_fields_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown tablet type"):
        tablet("zone1-101", type="master")
    with pytest.raises(InvalidArgumentError, match="mysql_port"):
        Tablet(alias="zone1-1", keyspace="k", shard="0", type=TabletType.REPLICA,
               mysql_host="h", mysql_port=70000)  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="durability"):
        Keyspace(name="k", durability_policy="paxos")  # type: ignore[arg-type]


async def test_tablet_listing_filters(topo: TopoStore) -> None:
    await make_shard(topo)
    await make_shard(topo, shard="-80")
    await topo.create_tablet(tablet("zone1-101"))
    await topo.create_tablet(tablet("zone1-102", type="rdonly"))
    await topo.create_tablet(tablet("zone2-201"))
    await topo.create_tablet(tablet("zone2-202", shard="-80"))
    aliases = lambda ts: [t.alias for t in ts]  # noqa: E731
    assert aliases(await topo.list_tablets()) == [
        "zone1-101",
        "zone1-102",
        "zone2-201",
        "zone2-202",
    ]
    assert aliases(await topo.list_tablets(cell="zone2")) == ["zone2-201", "zone2-202"]
    assert aliases(await topo.list_tablets(shard="0", type=TabletType.REPLICA)) == [
        "zone1-101",
        "zone2-201",
    ]
    tablets, unreadable = await topo.shard_tablets("commerce", "-80")
    assert aliases(tablets) == ["zone2-202"] and unreadable == []


async def test_serving_graph_is_rebuilt_and_watched(topo: TopoStore) -> None:
    await make_shard(topo)
    await topo.create_tablet(tablet("zone1-101", type="primary"))
    await topo.create_tablet(tablet("zone1-102"))
    await topo.update_shard_fields(
        "commerce", "0", lambda s: dataclasses.replace(s, primary_alias="zone1-101")
    )
    (graph,) = await topo.rebuild_serving_graph("commerce")
    shard = graph.shard("0")
    assert shard is not None and shard.primary is not None
    assert shard.primary.alias == "zone1-101" and shard.primary_serving
    assert [r.alias for r in shard.replicas] == ["zone1-102"]

    seen: asyncio.Queue[object] = asyncio.Queue()

    async def follow() -> None:
        async for g in topo.watch_srv_keyspace("zone1", "commerce"):
            await seen.put(g)

    task = asyncio.create_task(follow())
    try:
        first = await asyncio.wait_for(seen.get(), 5)
        assert first == graph
        await topo.update_shard_fields(
            "commerce", "0", lambda s: dataclasses.replace(s, primary_alias="zone1-102")
        )
        await topo.rebuild_serving_graph("commerce")
        nxt = await asyncio.wait_for(seen.get(), 5)
        assert nxt.shard("0").primary.alias == "zone1-102"  # type: ignore[union-attr]
    finally:
        task.cancel()


async def test_unreachable_etcd_is_topo_unavailable_quickly() -> None:
    store = TopoStore([f"127.0.0.1:{free_port()}"], root="/x", op_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(TopoUnavailableError):
        await store.get_keyspace("commerce")
    assert time.monotonic() - start < 3.5
    await store.close()


async def test_concurrent_rebuilds_never_leave_a_stale_serving_graph(topo: TopoStore) -> None:
    """Primaries of two shards change concurrently, each followed by a rebuild (as reparents
    on different shards do): the graph always ends agreeing with the Shard records."""
    for shard in ("-80", "80-"):
        await make_shard(topo, shard=shard)
    for alias, shard in [("zone1-101", "-80"), ("zone1-102", "-80"), ("zone1-201", "80-"),
                         ("zone1-202", "80-")]:  # fmt: skip
        await topo.create_tablet(tablet(alias, shard=shard))

    async def flip(shard: str, aliases: list[str]) -> None:
        for i in range(15):
            await topo.update_shard_fields(
                "commerce", shard,
                lambda s, a=aliases[i % 2]: dataclasses.replace(s, primary_alias=a),
            )  # fmt: skip
            await topo.rebuild_serving_graph("commerce")

    await asyncio.gather(flip("-80", ["zone1-101", "zone1-102"]),
                         flip("80-", ["zone1-201", "zone1-202"]))  # fmt: skip
    graph = await topo.get_srv_keyspace("zone1", "commerce")
    for shard in ("-80", "80-"):
        record = await topo.get_shard("commerce", shard)
        serving = graph.shard(shard)
        assert serving is not None and serving.primary is not None
        assert serving.primary.alias == record.primary_alias
