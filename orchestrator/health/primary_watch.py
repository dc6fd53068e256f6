"""Event-driven failure detection: a crashed primary's mysqld starts the dead-primary
confirmation at once, not at the next health cycle.

A mysqld that dies (SIGKILL, OOM killer, a crash) leaves its sockets to the kernel, which closes
them: a client blocked reading from one learns it within a millisecond, and so do the replicas'
IO threads (`Slave_IO_Running` turns to `Connecting`). So each shard primary gets one watch: a
connection of its own with a long `SELECT SLEEP(HOLD_S)` running on it, which costs the server
one sleeping thread. When that connection is *lost* (not timed out), the shard's tablets are
checked at once and the same analysis and recovery decision as the cycle's runs for that shard.

Nothing else changes, so the guarantees stay those of the cycle:

- DeadPrimary still needs the replicas' confirmation: a lost connection while a replica still
  replicates from the primary is PrimaryUnreachableFromOrchestrator, which triggers nothing (a
  cut between us and the primary alone, a connection killed by a tool or by `wait_timeout`);
- the recovery re-confirms on fresh data under the same rules: no ERS while a workflow holds
  the shard lock, anti-flapping (`recovery_block_s`), pauses, maintenance, leader only;
- one decision at a time per shard, whether the cycle or a watch asks (`Recoveries.consider`
  serializes them), and one recovery task per shard.

The replicas may see the closed socket a moment after we do. While the primary does not answer
and a replica still says its IO thread runs, the replicas that say so are checked again every
`CONFIRM_EVERY_S`, at most `CONFIRM_TRIES` times; then the cycle takes over. A watch triggers at
most once per health interval.

What it cannot see: a host that vanishes silently (power, a cut that drops packets) closes
nothing, and the sleeping query just does not return; that case is the cycle's, through its
check timeout, as before.

Watches run only where a shard's recoveries are decided (the instance that owns it, see
`ownership`; the leader when shards are not shared), one per primary, and follow the topology
each cycle read: a new primary after a reparent gets a new watch, a removed shard or
tablet loses its own. `health_event_detection = false` turns them off.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from migration.aio import cancel_all_and_wait
from mysqlctl.client import MysqlClient, MysqlParams
from mysqlctl.errors import MysqlError, MysqlTimeoutError, MysqlUnreachableError
from orchestrator.health.analysis import REPLICATING_TYPES, ProblemKind, TabletHealth, analyze
from orchestrator.health.control import load as load_control
from topo.errors import TopoError
from topo.records import Shard, Tablet
from workflows.common import read_shard

if TYPE_CHECKING:
    from orchestrator.health.checker import HealthChecker

log = structlog.get_logger(__name__)

# How long one sleeping query holds the connection: one round trip per HOLD_S per primary. A
# silent host is the cycle's to notice, so this only bounds how long a half-open connection,
# or the server thread of a watch that was stopped mid-sleep, lingers. Each sleep lasts a
# random part of it, between HOLD_JITTER and all of it: watches started together (a fleet's,
# by one cycle) would otherwise all wake together every HOLD_S, a burst that stalled the
# event loop for 100-180 ms every 10 s at 1,667 primaries (`bench.healthcheck --tablets 5000`).
HOLD_S = 10
HOLD_JITTER = 0.5
# Client-side deadline beyond the sleep (the server answers first when it is alive).
HOLD_GRACE_S = 5.0
# After a lost connection, replicas that still say their IO thread runs are checked again this
# often, this many times (the replicas' IO threads see a crash's closed socket within a few ms;
# a partition between us and the primary alone never makes them say otherwise).
CONFIRM_EVERY_S = 0.025
CONFIRM_TRIES = 12
# The last triggers, for the API and the tests.
MAX_EVENTS = 50


@dataclass(frozen=True)
class WatchTarget:
    """What one watch holds a connection to: a shard's primary at an address."""

    keyspace: str
    shard: str
    alias: str
    host: str
    port: int

    @property
    def key(self) -> str:
        return f"{self.keyspace}/{self.shard}"


def targets(shards: Iterable[Shard], tablets: Iterable[Tablet]) -> dict[str, WatchTarget]:
    """The primary of every shard that names one with a tablet record, by "ks/shard"."""
    by_alias = {t.alias: t for t in tablets}
    out = {}
    for shard in shards:
        t = by_alias.get(shard.primary_alias or "")
        if t is None or (t.keyspace, t.shard) != (shard.keyspace, shard.name):
            continue
        out[shard.key] = WatchTarget(
            shard.keyspace, shard.name, t.alias, t.mysql_host, t.mysql_port
        )
    return out


def still_connected(
    primary: Tablet, tablets: Iterable[Tablet], health: dict[str, TabletHealth]
) -> list[Tablet]:
    """The replicating tablets that answered and say their IO thread to `primary` runs: the
    ones that have not noticed (or deny) that it is gone."""
    out = []
    for t in tablets:
        h = health.get(t.alias)
        r = h.status.replication if h is not None and h.status is not None else None
        if t.alias == primary.alias or t.type not in REPLICATING_TYPES or r is None:
            continue
        if (r.source_host, r.source_port) == (primary.mysql_host, primary.mysql_port) and (
            r.io_running
        ):
            out.append(t)
    return out


class PrimaryWatches:
    """One watch task per shard primary, started and stopped by `follow` at every cycle."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker
        self.settings = checker.settings
        self._watches: dict[str, tuple[WatchTarget, asyncio.Task[None]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)

    @property
    def enabled(self) -> bool:
        return self.settings.health_event_detection

    def watched(self) -> dict[str, str]:
        """ "ks/shard" -> the alias of the primary watched."""
        return {k: target.alias for k, (target, _) in sorted(self._watches.items())}

    def follow(self, shards: Iterable[Shard], tablets: Iterable[Tablet]) -> None:
        """Watch exactly the primaries of `shards` (those this instance recovers); a watch
        whose shard, primary or address changed is replaced."""
        wanted = targets(shards, tablets) if self.enabled else {}
        for key, (target, task) in list(self._watches.items()):
            if wanted.get(key) != target or task.done():
                del self._watches[key]
                task.cancel()
                self._stopping.add(task)
        for key, target in wanted.items():
            if key not in self._watches:
                task = asyncio.create_task(self._watch(target), name=f"primary watch {key}")
                self._watches[key] = (target, task)
        self._stopping = {t for t in self._stopping if not t.done()}

    async def stop(self) -> None:
        """Stop every watch (bounded, see `cancel_all_and_wait`)."""
        tasks = [task for _, task in self._watches.values()] + list(self._stopping)
        self._watches.clear()
        self._stopping.clear()
        await cancel_all_and_wait(tasks)

    # -- one watch -----------------------------------------------------------------------------

    async def _watch(self, target: WatchTarget) -> None:
        s = self.settings
        client = MysqlClient(
            MysqlParams(
                target.host, target.port, s.mysql_user, s.mysql_password,
                connect_timeout=min(s.mysql_connect_timeout_s, s.health_timeout_s),
                query_timeout=HOLD_S + HOLD_GRACE_S,
            )
        )  # fmt: skip
        last_trigger = -float("inf")
        try:
            while True:
                try:
                    await client.connect()
                except MysqlError:
                    # Not reachable now: the cycle's checks judge it; try again later.
                    await asyncio.sleep(s.health_interval_s)
                    continue
                try:
                    hold = round(HOLD_S * random.uniform(HOLD_JITTER, 1.0), 3)
                    await client.fetch_one(
                        "SELECT SLEEP(%s) AS slept", (hold,), timeout=HOLD_S + HOLD_GRACE_S,
                        retry=False,
                    )  # fmt: skip
                    continue  # slept to the end (or our query was killed): hold again
                except MysqlTimeoutError:
                    continue  # no answer at all: a silent host is the cycle's to judge
                except MysqlUnreachableError as e:
                    lost = str(e)
                except MysqlError as e:  # the server refused the statement: not a crash
                    log.debug(f"primary watch {target.key}: {e}")
                    await asyncio.sleep(s.health_interval_s)
                    continue
                now = time.monotonic()
                if now - last_trigger < s.health_interval_s:
                    continue  # flapping connections: the cycle is as quick
                last_trigger = now
                try:
                    await self.on_lost(target, lost)
                except TopoError as e:
                    log.warning(f"primary watch {target.key}: topology unavailable", error=str(e))
                except Exception:
                    log.exception(f"primary watch {target.key}: the immediate check failed")
        finally:
            await client.close()

    async def on_lost(self, target: WatchTarget, error: str) -> str:
        """The watch's connection to `target` was lost: check the shard now and decide as the
        cycle would. Returns what happened, in a few words (also kept in `events`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        event: dict[str, Any] = {"shard": target.key, "primary": target.alias,
                                 "time": time.time(), "error": error}  # fmt: skip
        self.events.append(event)
        checker = self.checker
        recover, why_not = checker.recovers(target.key)
        if not recover:
            event["outcome"] = why_not
            return event["outcome"]
        view = await read_shard(checker.store, target.keyspace, target.shard)
        primary = next((t for t in view.tablets if t.alias == view.shard.primary_alias), None)
        if primary is None or primary.alias != target.alias:
            event["outcome"] = "the shard has another primary now"
            return event["outcome"]
        lock = await checker.store.get_lock(target.keyspace, target.shard)
        checking: list[Tablet] = list(view.tablets)
        rechecks = 0
        while True:
            health = await checker.check_now(checking)
            problems = analyze(
                view.shard, view.tablets, health, lock=lock,
                unhealthy_checks=self.settings.unhealthy_checks_to_spare,
                max_lag_s=self.settings.replica_lag_threshold_s, now=time.time(),
            )  # fmt: skip
            kinds = {p.kind for p in problems}
            if ProblemKind.PRIMARY_UNREACHABLE not in kinds or rechecks >= CONFIRM_TRIES:
                break
            # The primary does not answer but a replica still says it replicates from it: it
            # may not have read the closed socket yet. Ask those replicas again, briefly.
            checking = still_connected(primary, view.tablets, health)
            if not checking:
                break
            rechecks += 1
            await asyncio.sleep(CONFIRM_EVERY_S)
        event.update(
            problems=[p.kind.value for p in problems], rechecks=rechecks,
            ms=round((loop.time() - started) * 1000, 1),
        )  # fmt: skip
        if ProblemKind.DEAD_PRIMARY not in kinds:
            event["outcome"] = "no dead primary: left to the cycle"
            log.info(f"primary watch {target.key}: connection to {target.alias} lost ({error}); "
                     f"{', '.join(p.describe() for p in problems) or 'healthy'}: no action",
                     rechecks=rechecks, ms=event["ms"])  # fmt: skip
            return event["outcome"]
        log.info(f"primary watch {target.key}: connection to {target.alias} lost and its replicas "
                 "confirm: deciding now", rechecks=rechecks, ms=event["ms"])  # fmt: skip
        control = await load_control(checker.store)
        recover, why_not = checker.recovers(target.key)
        await checker.recovery.consider(
            view.keyspace, target.key, problems, recover=recover, why_not=why_not,
            control=control,
        )  # fmt: skip
        event["outcome"] = "decided"
        return event["outcome"]
