"""The pure parts of event-driven detection (`orchestrator.health.primary_watch`): which
primaries are watched, which replicas are asked again, and how watches follow the topology and
stop; and, against a real server, that watches started together do not wake together. The
watch's detection against real servers is in tests/service/test_event_detection.py."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

from mysqlctl import MysqlClient
from orchestrator.health.primary_watch import (
    HOLD_JITTER,
    HOLD_S,
    PrimaryWatches,
    WatchTarget,
    still_connected,
    targets,
)
from orchestrator.settings import Settings
from tests.fixtures_mysql import MariadbFactory, mysql_params_for
from tests.test_health_analysis import down, repl, tablet, up
from topo.records import Shard, Tablet, TabletType

PRIMARY = tablet("zone1-101", TabletType.PRIMARY)
TABLETS = [PRIMARY, tablet("zone1-102"), tablet("zone1-103"), tablet("zone1-104", TabletType.SPARE)]


def test_targets_are_the_primaries_named_by_shard_records_with_a_tablet() -> None:
    other = dataclasses.replace(tablet("zone1-104", TabletType.PRIMARY), keyspace="customer")
    shards = [
        Shard(keyspace="commerce", name="0", primary_alias="zone1-101"),
        Shard(keyspace="customer", name="0", primary_alias="zone1-104"),
        Shard(keyspace="empty", name="0"),  # no primary
        Shard(keyspace="ghost", name="0", primary_alias="zone1-109"),  # no tablet record
        # a Shard record naming another shard's tablet is not watched as its primary
        Shard(keyspace="wrong", name="0", primary_alias="zone1-102"),
    ]
    got = targets(shards, [*TABLETS[:3], other])
    assert got == {
        "commerce/0": WatchTarget("commerce", "0", "zone1-101", "127.0.0.1", 3301),
        "customer/0": WatchTarget("customer", "0", "zone1-104", "127.0.0.1", 3304),
    }


def test_still_connected_lists_the_replicas_that_say_they_replicate_from_the_primary() -> None:
    health = {
        "zone1-101": down("zone1-101"),
        "zone1-102": up("zone1-102", replication=repl()),  # has not noticed yet
        "zone1-103": up("zone1-103", replication=repl(io="Connecting")),  # noticed
        "zone1-104": up("zone1-104", replication=repl()),  # spare: not a witness
    }
    assert [t.alias for t in still_connected(PRIMARY, TABLETS, health)] == ["zone1-102"]
    # Replicating from elsewhere, not answering, or not replicating at all: not listed.
    health["zone1-102"] = up("zone1-102", replication=repl("zone1-103"))
    assert still_connected(PRIMARY, TABLETS, health) == []
    health["zone1-102"] = down("zone1-102")
    assert still_connected(PRIMARY, TABLETS, health) == []
    health["zone1-102"] = up("zone1-102")
    assert still_connected(PRIMARY, TABLETS, health) == []


class _FakeWatches(PrimaryWatches):
    """Watches whose connection part is replaced by a wait: only the bookkeeping is tested."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
        self.started: list[WatchTarget] = []
        self.cancelled: list[WatchTarget] = []

    async def _watch(self, target: WatchTarget) -> None:
        self.started.append(target)
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled.append(target)


SHARD = Shard(keyspace="commerce", name="0", primary_alias="zone1-101")


async def test_watches_follow_the_topology_and_stop() -> None:
    w = _FakeWatches(Settings())
    w.follow([SHARD], TABLETS)
    w.follow([SHARD], TABLETS)  # unchanged: the same watch goes on
    await asyncio.sleep(0)
    assert w.watched() == {"commerce/0": "zone1-101"} and len(w.started) == 1

    # A reparent: the watch moves to the new primary.
    moved = dataclasses.replace(SHARD, primary_alias="zone1-102")
    w.follow([moved], TABLETS)
    await asyncio.sleep(0)
    assert w.watched() == {"commerce/0": "zone1-102"}
    assert [t.alias for t in w.started] == ["zone1-101", "zone1-102"]
    assert [t.alias for t in w.cancelled] == ["zone1-101"]

    # The primary's address changed: a new watch.
    readdressed = [dataclasses.replace(t, mysql_port=4302) if t.alias == "zone1-102" else t
                   for t in TABLETS]  # fmt: skip
    w.follow([moved], readdressed)
    await asyncio.sleep(0)
    assert w.started[-1].port == 4302 and len(w.cancelled) == 2

    # No longer the instance that recovers the shard (not passed): no watch at all.
    w.follow([], readdressed)
    assert w.watched() == {}
    w.follow([moved], readdressed)
    await asyncio.sleep(0)
    await w.stop()
    assert w.watched() == {}
    assert len(w.cancelled) == len(w.started) == 4


async def test_no_watch_when_event_detection_is_off() -> None:
    w = _FakeWatches(Settings(health_event_detection=False))
    w.follow([SHARD], TABLETS)
    await asyncio.sleep(0)
    assert w.watched() == {} and w.started == []
    await w.stop()


def test_the_setting_reads_from_the_environment() -> None:
    assert Settings().health_event_detection is True
    off = Settings.load(environ={"ORC_HEALTH_EVENT_DETECTION": "off"})
    assert off.health_event_detection is False


async def test_watches_started_together_sleep_for_different_lengths(
    mariadb_factory: MariadbFactory,
) -> None:
    """Against a real server: six watches started by one `follow` each hold a sleeping query
    of a random length within [HOLD_JITTER, 1] x HOLD_S, so they do not all wake together."""
    (server,) = await mariadb_factory(1)
    settings = Settings(mysql_user=server.admin_user, mysql_password=server.admin_password)
    watches = PrimaryWatches(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    shards, tablets = [], []
    for n in range(6):
        primary = Tablet(alias=f"zone1-{200 + n}", keyspace=f"ks{n}", shard="0",
                         type=TabletType.PRIMARY, mysql_host=server.host,
                         mysql_port=server.port)  # fmt: skip
        shards.append(Shard(keyspace=f"ks{n}", name="0", primary_alias=primary.alias))
        tablets.append(primary)
    async with MysqlClient(mysql_params_for(server)) as observer:
        watches.follow(shards, tablets)
        try:
            holds: list[float] = []
            for _ in range(100):
                rows = await observer.fetch_all(
                    "SELECT info FROM information_schema.processlist"
                    " WHERE info LIKE 'SELECT SLEEP(%%'"
                )
                holds = [float(str(r["info"]).split("(")[1].split(")")[0]) for r in rows]
                if len(holds) == 6:
                    break
                await asyncio.sleep(0.05)
            assert len(holds) == 6, holds
            assert all(HOLD_S * HOLD_JITTER <= h <= HOLD_S for h in holds), holds
            assert len(set(holds)) > 1, holds
        finally:
            await watches.stop()
