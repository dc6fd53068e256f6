"""Network partitions around the primary, with the service running in-process.

The primary's mysqld runs in a network namespace of its own (`tests/helpers/netns.py`), reached
from the root namespace at two addresses: path A (`addr_a`, the tablet record's `mysql_host`,
which the orchestrator uses and which the replicas' CHANGE MASTER names, as always) and path B
(`addr_b`, used by the test's application writer and by its own checks of the primary). The
replicas run in the root namespace on loopback, as their own group id (`REPLICA_GID`), so that
iptables can tell their traffic to the primary from the orchestrator's, which goes to the same
address from the same namespace.

1. Only the orchestrator loses the primary (every root-namespace process but the replicas
   loses path A): the health checks see the primary unreachable, the replicas confirm it is
   alive, so the analysis says PrimaryUnreachableFromOrchestrator and nothing is done; the
   replicas keep replicating the writes made through path B. Healing brings back a healthy shard.
2. Everybody loses the primary (every packet to and from the namespace dropped, silently): the
   replicas notice within `slave_net_timeout`, the analysis says DeadPrimary, ERS promotes a
   replica and the writer following the serving graph resumes there with no acknowledged write
   lost (semi-sync). When the network comes back, the old primary is fenced (read-only, spare)
   and never acknowledges an application write once the new primary took over. (This test
   found two bugs, now fixed: ERS gave up on replicas whose IO thread took 2 s to stop while
   reconnecting to a vanished source, and the semi-sync primary fell back to async after 10 s,
   acknowledging writes no replica had.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mysqlctl.client import MysqlClient, MysqlParams
from mysqlctl.errors import MysqlError, MysqlServerError
from orchestrator.health.analysis import ProblemKind
from orchestrator.local import cluster
from orchestrator.local.cluster import ClusterSpec, ClusterState, TabletProcess
from orchestrator.local.etcd import EtcdServer
from orchestrator.local.mariadb import MariadbServer, start_mariadb
from tests.fixtures_cluster import Shard, Writer
from tests.fixtures_mysql import mysql_params_for
from tests.fixtures_service import RunningService, ServiceFactory
from tests.helpers.health import FAST, first_write_after_failure, recoveries, wait_for
from tests.helpers.health import start_service as start_fast_service
from tests.helpers.netns import NetnsHost, as_gid
from tests.helpers.split_brain import SplitBrainWatcher
from topo.records import Durability, TabletType
from workflows.env import WorkflowEnv

pytestmark = pytest.mark.slow

PRIMARY = "zone1-101"
REPLICAS = ("zone1-102", "zone1-103")
# The group id the replicas' mysqld run as (still uid root): their traffic passes a cut that
# drops everybody else's. Any unused number works; no /etc/group entry is needed.
REPLICA_GID = 64213
SETTINGS = {**FAST, "health_interval_s": 0.3, "health_timeout_s": 0.25}
ER_OPTION_PREVENTS_STATEMENT = 1290  # a write refused by read_only
SEMI_SYNC_FALLBACK_S = 10.0  # MariaDB's default rpl_semi_sync_master_timeout


@dataclass
class NsShard:
    shard: Shard
    net: NetnsHost

    def primary_via_b(self, *, app: bool, **timeouts: float) -> MysqlParams:
        """Connection parameters for the primary through path B."""
        s = self.shard.server(PRIMARY)
        user, password = (s.app_user, s.app_password) if app else (s.admin_user, s.admin_password)
        return MysqlParams(self.net.addr_b, s.port, user, password, **timeouts)

    def watcher(self, *, commit_on: frozenset[str] = frozenset()) -> SplitBrainWatcher:
        """A split-brain watcher reaching the primary through path B, the replicas directly."""

        def params(alias: str, app: bool) -> MysqlParams:
            if alias == PRIMARY:
                return self.primary_via_b(app=app)
            return (
                self.shard.app_params(alias) if app else mysql_params_for(self.shard.server(alias))
            )

        return SplitBrainWatcher(self.shard, params=params, commit_on=commit_on)


@dataclass
class PathBWriter(Writer):
    """The application writer, reaching a primary in the namespace through path B."""

    net: NetnsHost | None = None

    async def _primary_params(self) -> MysqlParams | None:
        params = await super()._primary_params()
        if params is not None and self.net is not None and params.host == self.net.addr_a:
            params = dataclasses.replace(params, host=self.net.addr_b)
        return params


NsShardFactory = Callable[..., Awaitable[NsShard]]


@pytest.fixture
async def ns_shard_factory(
    etcd_server: EtcdServer, tmp_path: Path
) -> AsyncIterator[NsShardFactory]:
    """`await ns_shard_factory(durability=...)`: zone1-101 (primary, in a namespace) and two
    replicas on loopback, InitShardPrimary done. Everything is torn down whatever happens."""
    nets: list[NetnsHost] = []
    servers: list[MariadbServer] = []
    shards: list[Shard] = []

    async def make(durability: str = "semi_sync") -> NsShard:
        net = await NetnsHost.create()
        nets.append(net)
        spec = ClusterSpec(
            tablets_per_shard=3, durability=Durability.parse(durability), service=False,
            root=f"/t-{uuid.uuid4().hex[:10]}",
        )  # fmt: skip
        state = ClusterState(
            dir=tmp_path / net.name, spec=spec, external_etcd=[etcd_server.endpoint]
        )
        state.dir.mkdir(parents=True)
        # Every server starts read-only, as `local up` starts them.
        starts = [
            start_mariadb(
                state.dir / PRIMARY, server_id=101, name=PRIMARY, host=net.addr_a,
                extra_options={"read-only": "ON", "bind-address": "0.0.0.0"},
                command_prefix=net.exec_prefix,
            ),
            *(start_mariadb(state.dir / alias, server_id=uid, name=alias,
                            extra_options={"read-only": "ON"}, command_prefix=as_gid(REPLICA_GID))
              for alias, uid in zip(REPLICAS, (102, 103), strict=True)),
        ]  # fmt: skip
        results = await asyncio.gather(*starts, return_exceptions=True)
        servers.extend(r for r in results if isinstance(r, MariadbServer))
        for r in results:
            if isinstance(r, BaseException):
                raise r
        state.tablets = [
            TabletProcess(alias, "zone1", "0", server)
            for alias, server in zip((PRIMARY, *REPLICAS), results, strict=True)
            if isinstance(server, MariadbServer)
        ]
        await cluster._register_and_init(state)
        store = state.store(lock_ttl=3)
        shard = Shard(state, store, WorkflowEnv(store, state.credentials()), spec.keyspace, "0")
        shards.append(shard)
        return NsShard(shard, net)

    try:
        yield make
    finally:
        for shard in shards:
            with contextlib.suppress(Exception):
                await shard.close()
        for server in servers:
            server.kill()
        for net in nets:
            await net.delete()


async def start_service(
    shard: Shard, service_factory: ServiceFactory, **kw: float
) -> RunningService:
    return await start_fast_service(shard, service_factory, **{**SETTINGS, **kw})


def problem_kinds(rs: RunningService) -> list[str]:
    return [p["kind"] for p in rs.service.health.problems().get("commerce/0", [])]


async def ers_records(shard: Shard) -> list[str]:
    return [
        r.id for r in await shard.store.list_workflows() if r.action == "EmergencyReparentShard"
    ]


async def test_orchestrator_cut_from_primary_triggers_no_failover(
    ns_shard_factory: NsShardFactory, service_factory: ServiceFactory
) -> None:
    ns = await ns_shard_factory()
    shard, net = ns.shard, ns.net
    await shard.create_test_table()
    rs = await start_service(shard, service_factory, recovery_block_s=0)
    health = rs.service.health
    writer = PathBWriter(shard, net=net)
    writer.start()
    watch = ns.watcher()
    try:
        await writer.wait_acked(20)
        await watch.start()
        before = await shard.store.get_shard("commerce", "0")

        cut_at = time.monotonic()
        await net.cut_except_gid(REPLICA_GID, net.addr_a)
        await wait_for(lambda: not health.snapshot()[PRIMARY]["healthy"], 5, "a failed check")
        noticed_s = time.monotonic() - cut_at
        await wait_for(lambda: problem_kinds(rs) == [ProblemKind.PRIMARY_UNREACHABLE.value], 5,
                       "PrimaryUnreachableFromOrchestrator")  # fmt: skip
        analysed_s = time.monotonic() - cut_at
        # Watch for many intervals (longer than the replicas' slave_net_timeout of 5 s too):
        # the analysis never changes its mind, the replicas keep replicating, nothing is done.
        seen: set[tuple[str, ...]] = set()
        while time.monotonic() - cut_at < 6.0:
            seen.add(tuple(problem_kinds(rs)))
            snap = health.snapshot()
            assert not snap[PRIMARY]["healthy"]
            for alias in REPLICAS:
                assert snap[alias]["healthy"] and snap[alias]["io_running"], snap[alias]
            await asyncio.sleep(0.1)
        window_s = time.monotonic() - cut_at
        problems = health.problems()["commerce/0"]
        assert seen == {(ProblemKind.PRIMARY_UNREACHABLE.value,)}, seen
        assert "still replicate from it" in problems[0]["detail"], problems
        assert health.snapshot()[PRIMARY]["consecutive_failures"] >= 5
        assert await shard.store.get_shard("commerce", "0") == before
        assert await ers_records(shard) == []
        assert health.recoveries() == []
        # The application kept writing through path B (semi-sync: every write acknowledged by
        # a replica), and both replicas hold every one of those writes.
        during = [i for i, t in writer.acked if t > cut_at]
        assert len(during) >= 20, f"only {len(during)} writes during the cut"
        for alias in REPLICAS:
            await shard.wait_rows(alias, during, timeout=5)

        healed_at = time.monotonic()
        await net.heal()
        await wait_for(lambda: health.snapshot()[PRIMARY]["healthy"] and problem_kinds(rs) == [],
                       5, "a healthy shard after healing")  # fmt: skip
        healthy_s = time.monotonic() - healed_at
        await writer.wait_acked(10)
    finally:
        await writer.stop()
        await watch.stop()
    watch.assert_no_split_brain()
    # Nothing moved: no write was refused or lost its server (path B stayed up).
    writer.check_errors()
    print(f"\norchestrator cut from the primary: first failed check after {noticed_s * 1000:.0f}"
          f" ms, PrimaryUnreachableFromOrchestrator after {analysed_s * 1000:.0f} ms; no action"
          f" in {window_s:.1f} s while {len(during)} writes went through path B and replicated;"
          f" healed: shard healthy again after {healthy_s * 1000:.0f} ms; {watch.summary()}")  # fmt: skip
    assert await shard.check_invariants() == PRIMARY
    for alias in REPLICAS:
        await writer.wait_all_on(alias)
    assert health.recoveries() == []


async def test_watch_connection_lost_while_cut_from_the_primary_alone_triggers_no_failover(
    ns_shard_factory: NsShardFactory, service_factory: ServiceFactory
) -> None:
    """Event-driven detection on (the default): the orchestrator's watch connection to the
    primary is lost (closed by the primary, as a crash would close it, while the server lives
    on) and the orchestrator is cut from the primary alone. The watch checks the shard at once,
    the replicas keep saying they replicate from it, so nothing is done, for many cycles."""
    ns = await ns_shard_factory()
    shard, net = ns.shard, ns.net
    await shard.create_test_table()
    rs = await start_service(shard, service_factory, recovery_block_s=0)
    health = rs.service.health
    assert rs.service.settings.health_event_detection
    await wait_for(lambda: health.primary_watch.watched() == {"commerce/0": PRIMARY}, 5,
                   "the primary watched")  # fmt: skip
    admin_b = MysqlClient(ns.primary_via_b(app=False))
    user = rs.service.settings.mysql_user

    async def watch_threads() -> list[int]:
        rows = await admin_b.fetch_all("SHOW FULL PROCESSLIST")
        return [int(r["Id"]) for r in rows if r.get("User") == user
                and str(r.get("Info") or "").startswith("SELECT SLEEP(")]  # fmt: skip

    writer = PathBWriter(shard, net=net)
    writer.start()
    watch = ns.watcher()
    try:
        await writer.wait_acked(20)
        await watch.start()
        before = await shard.store.get_shard("commerce", "0")
        threads = await wait_for(watch_threads, 5, "the watch's sleeping query on the primary")

        cut_at = time.monotonic()
        await net.cut_except_gid(REPLICA_GID, net.addr_a)
        for thread in threads:
            await admin_b.execute(f"KILL {thread}")
        fired = await wait_for(
            lambda: [e for e in health.primary_watch.events if "outcome" in e], 5,
            "the watch to check the shard",
        )  # fmt: skip
        fired_s = time.monotonic() - cut_at
        while time.monotonic() - cut_at < 6.0:  # many cycles, and past slave_net_timeout (5 s)
            snap = health.snapshot()
            for alias in REPLICAS:
                assert snap[alias]["healthy"] and snap[alias]["io_running"], snap[alias]
            await asyncio.sleep(0.1)
        problems = health.problems()["commerce/0"]
        assert [p["kind"] for p in problems] == [ProblemKind.PRIMARY_UNREACHABLE.value], problems
        assert await shard.store.get_shard("commerce", "0") == before
        assert await ers_records(shard) == []
        assert health.recoveries() == []
        during = [i for i, t in writer.acked if t > cut_at]
        assert len(during) >= 20, f"only {len(during)} writes during the cut"

        await net.heal()
        await wait_for(lambda: health.snapshot()[PRIMARY]["healthy"] and problem_kinds(rs) == [],
                       5, "a healthy shard after healing")  # fmt: skip
        await wait_for(watch_threads, 10, "the watch back on the primary")
    finally:
        await writer.stop()
        await watch.stop()
        await admin_b.close()
    watch.assert_no_split_brain()
    writer.check_errors()
    print(f"\nwatch connection lost + orchestrator cut from the primary alone: the watch checked "
          f"the shard after {fired_s * 1000:.0f} ms ({fired[0]}); no action in 6 s")  # fmt: skip
    assert fired[0]["primary"] == PRIMARY
    assert fired[0]["problems"] == [ProblemKind.PRIMARY_UNREACHABLE.value]
    assert fired[0]["outcome"] == "no dead primary: left to the cycle"
    assert fired[0]["rechecks"] > 0  # the replicas were asked again, and still denied it
    assert await shard.check_invariants() == PRIMARY
    for alias in REPLICAS:
        await writer.wait_all_on(alias)


async def test_primary_cut_from_everyone_fails_over_and_is_fenced_when_back(
    ns_shard_factory: NsShardFactory, service_factory: ServiceFactory
) -> None:
    ns = await ns_shard_factory(durability="semi_sync")
    shard, net = ns.shard, ns.net
    await shard.create_test_table()
    rs = await start_service(shard, service_factory, recovery_block_s=30)
    writer = PathBWriter(shard, net=net)
    # From the failover on, the old primary must never acknowledge an application write: probe
    # it through path B (unreachable until the network comes back, then it must refuse).
    probe = OldPrimaryProbe(ns.primary_via_b(app=True, connect_timeout=0.2, query_timeout=1.0))
    old = MysqlClient(ns.primary_via_b(app=False, query_timeout=2.0))
    # The cut-off primary keeps read_only = 0 until it is fenced once back: for it, only an
    # acknowledged commit is a write taken (semi-sync: it cannot get one).
    watch = ns.watcher(commit_on=frozenset({PRIMARY}))
    writer.start()
    try:
        await writer.wait_acked(50)
        await watch.start()
        cut_at = time.monotonic()
        await net.cut_all()
        await wait_for(lambda: problem_kinds(rs)[:1] == [ProblemKind.DEAD_PRIMARY.value], 15,
                       "DeadPrimary")  # fmt: skip
        dead_s = time.monotonic() - cut_at

        async def failed_over() -> bool:
            return await shard.primary_alias() != PRIMARY

        try:
            await wait_for(failed_over, 15, "a new primary in the Shard record")
        except AssertionError as e:
            raise AssertionError(f"{e}; recoveries: {recovery_lines(rs)}") from None
        failover_s = time.monotonic() - cut_at
        first_write = await wait_for(
            lambda: first_write_after_failure(writer, cut_at), 10, "a write on the new primary"
        )
        new_primary = await shard.primary_alias()
        assert new_primary in REPLICAS
        probe.start()
        # Back after MariaDB's default semi-sync timeout (10 s) has run out for a commit caught
        # by the cut, if the primary still has one: then it would answer in asynchronous mode.
        await asyncio.sleep(max(1.0, cut_at + SEMI_SYNC_FALLBACK_S + 1.0 - time.monotonic()))
        healed_at = time.monotonic()
        await net.heal()

        async def fenced() -> bool:
            try:
                read_only = (await old.status()).read_only
            except MysqlError:
                return False
            return read_only and (await shard.tablet(PRIMARY)).type == TabletType.SPARE

        try:
            await wait_for(fenced, 10, "the old primary read-only and spare")
        except AssertionError as e:
            raise AssertionError(f"{e}; recoveries: {recovery_lines(rs)}") from None
        fenced_s = time.monotonic() - healed_at
        await asyncio.sleep(1.0)  # the probe keeps trying a little longer
        await probe.stop()
        with pytest.raises(MysqlServerError) as refused:
            async with MysqlClient(ns.primary_via_b(app=True)) as c:
                await c.execute("INSERT INTO test.acked (id, t) VALUES (%s, %s)",
                                (10**9, time.time()))  # fmt: skip
        assert refused.value.code == ER_OPTION_PREVENTS_STATEMENT
        await writer.wait_acked(50)
    finally:
        await writer.stop()
        await probe.stop()
        await old.close()
        await watch.stop()
    watch.assert_no_split_brain()
    # The primary's server is cut (no answer in time, or a lost connection) until ERS moves
    # the serving graph.
    writer.check_errors("timeout", "unreachable")

    print(f"\nprimary cut from everyone: DeadPrimary after {dead_s:.1f} s, {new_primary} primary "
          f"in the Shard record after {failover_s:.1f} s, first write on it after "
          f"{first_write - cut_at:.1f} s; network back after {healed_at - cut_at:.1f} s: old "
          f"primary read-only and spare after {fenced_s * 1000:.0f} ms; probe of the old "
          f"primary: {probe.summary()}; {len(writer.acked)} writes acknowledged, "
          f"{writer.errors} failed {dict(writer.error_kinds)}; {watch.summary()}")  # fmt: skip
    print("recoveries:", recovery_lines(rs))
    assert probe.acked == [], (
        f"the old primary acknowledged app writes after the failover: {probe.acked}"
    )
    assert await shard.check_invariants() == new_primary
    assert (await shard.tablet(PRIMARY)).type == TabletType.SPARE
    assert await writer.missing_on(new_primary) == []
    done = recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded")
    assert len(done) == 1 and new_primary in done[0]["reason"]
    assert len(await ers_records(shard)) == 1


def recovery_lines(rs: RunningService) -> list[str]:
    return [f"{e['problem']} {e['tablet']}: {e['result']}: {e['reason']}"
            for e in reversed(rs.service.health.recoveries())]  # fmt: skip


class OldPrimaryProbe:
    """Applications that keep trying to write to the old primary, each attempt on a fresh
    connection, several at once so that some attempt starts within a few tens of ms of the
    network coming back; records every acknowledged write and every refusal."""

    WORKERS = 6

    def __init__(self, params: MysqlParams) -> None:
        self.params = params
        self.acked: list[tuple[int, float]] = []
        self.refused: list[int] = []
        self.failed = 0
        self._ids = itertools.count(2 * 10**9)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.WORKERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def _run(self, worker: int) -> None:
        await asyncio.sleep(worker * self.params.connect_timeout / self.WORKERS)  # stagger
        while not self._stop.is_set():
            row_id = next(self._ids)
            try:
                async with MysqlClient(self.params) as c:
                    await c.execute(
                        "INSERT INTO test.acked (id, t) VALUES (%s, %s)", (row_id, time.time())
                    )
                self.acked.append((row_id, time.monotonic()))
            except MysqlServerError as e:
                self.refused.append(e.code or 0)
            except MysqlError:
                self.failed += 1
            await asyncio.sleep(0.02)

    def summary(self) -> str:
        return (f"{len(self.acked)} acknowledged, {len(self.refused)} refused "
                f"(codes {sorted(set(self.refused))}), {self.failed} unreachable/timed out")  # fmt: skip
