"""The sync unit: apply a source's binlog to the target, whole transactions in batches.

Steps:

1. Check that the server we are about to read holds everything the target already has from
   this source (its GTID position contains our checkpoint); otherwise pause with a divergence
   error naming the GTIDs, because the shard lost transactions the target kept.
2. Stream the binlog from the checkpoint position (`migration.binlog`, in a thread).
3. Gather whole transactions into a batch (up to `syncer.batch` rows, never splitting a
   transaction, never mixing in a DDL) and apply it in ONE downstream transaction that first
   fences and moves our checkpoint row: a crash loses or repeats nothing.
4. Safe mode (idempotent statements) while the position has not yet passed the checkpoint's
   `safe_mode_until` (the load's exit point), or always if the task asks for it.
5. A DDL on a table of its own is rewritten to the target's names and run; one on a merged
   table pauses the subtask until shard-mode coordination handles it.
6. When `switch` is set (the source shard's tablets changed), finish the batch at hand and
   return at a transaction boundary; the caller resumes on the new server from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from migration.aio import cancel_and_wait
from migration.binlog import BinlogReader, Heartbeat, reader_server_id
from migration.checkpoint import Checkpoint
from migration.conflicts import key_conflict
from migration.context import SubtaskContext
from migration.ddl import ALREADY_APPLIED_CODES, UnparsedDdl, parse_ddl
from migration.errors import (
    DdlNeedsCoordinationError,
    DivergenceError,
    SourceBehindError,
    UnsupportedDdlError,
)
from migration.rows import DdlChange, RowChange, Transaction, change_statements
from migration.schema import table_info
from migration.shardddl_subtask import LockParticipant
from migration.sources import SourceServer
from migration.spec import SYSTEM_SCHEMAS, TaskSpec
from migration.upstream import ServerIdentity, read_server_state, relay_position
from mysqlctl.errors import MysqlError, MysqlServerError
from mysqlctl.gtid import MariadbGtidSet, MysqlGtidSet, Position
from mysqlctl.session import Session
from topo.errors import TopoError

DUPLICATE_KEY = 1062
# How often a subtask that holds a table looks at its locks even without a watch event.
LOCK_RECHECK_S = 2.0


@dataclass(frozen=True)
class HoldRequest:
    """A DDL on an upstream table of a merged target: hold the table for a sharding DDL lock."""

    upstream: str
    target: tuple[str, str]
    ddl: str


def parse_gtids(flavor: str, text: str) -> Position:
    return MariadbGtidSet.parse(text) if flavor == "MariaDB" else MysqlGtidSet.parse(text)


class Syncer:
    """One run of the sync unit against one source server (see the module docstring)."""

    def __init__(self, ctx: SubtaskContext, target: Session, server: SourceServer) -> None:
        self.ctx = ctx
        self.target = target
        self.server = server
        self._keys: dict[tuple[str, str], tuple[str, ...]] = {}
        self.applied_rows = 0
        self.last_ts = 0
        self.flavor = "MariaDB"
        # A DDL met while gathering a batch: applied right after that batch.
        self._pending_ddl: Transaction | None = None
        self._started = time.monotonic()
        # Set when a sharding DDL lock released a hold: the stream restarts at the checkpoint.
        self.rewound = False
        self._lock_changed = asyncio.Event()

    async def run(self, cp: Checkpoint, switch: asyncio.Event) -> Checkpoint:
        ctx = self.ctx
        ctx.report(unit="Sync", source_address=self.server.address)
        # 1. divergence (on the server the binlog connections will be tied to)
        async with await ctx.server_session(self.server.host, self.server.port) as s:
            state = await read_server_state(s)
            self.flavor = flavor = state.flavor
            self._note_identity(state.identity, cp)
            await self._check_contains(cp.gtid, state.position, s)
        self.ddl = LockParticipant(ctx, self.target, flavor)
        # Watched from before the first look at the locks: no change between the two is missed.
        lock_rev = await ctx.mstore.revision() + 1
        cp, self.rewound = await self.ddl.act(cp)
        if self.rewound:
            return cp
        await self.ddl.report_holds(cp)  # after `act`: a lock removed by force stays removed
        # 2. stream
        reader = BinlogReader(
            ctx.creds.params(self.server.host, self.server.port),
            flavor=flavor, start=cp.gtid,
            server_id=reader_server_id(ctx.spec.name, ctx.source_id, ctx.epoch),
            route=self._route, ignored_schemas=[*SYSTEM_SCHEMAS, ctx.spec.meta_schema],
            expect=state.identity,
        )  # fmt: skip
        reader.start()
        ctx.log.info("sync started", server=self.server.describe(), gtid=cp.gtid,
                     safe_mode_until=cp.safe_mode_until)  # fmt: skip
        replaying = True
        lock_watch = asyncio.create_task(self._watch_locks(lock_rev), name="ddl lock watch")
        try:
            while not switch.is_set():
                item = await _first(reader.next(), switch, self._lock_changed)
                if item is None:
                    if switch.is_set():
                        break
                    self._lock_changed.clear()
                    cp, self.rewound = await self.ddl.act(cp)
                    if self.rewound:
                        break
                    continue
                if isinstance(item, Heartbeat):
                    self._report(cp, caught_up=True)
                    continue
                batch = self._gather(item, reader, cp)
                cp = await self._apply(cp, batch, replaying=replaying)
                replaying = False
                self._report(cp, caught_up=False)
        finally:
            await cancel_and_wait(lock_watch)
            await reader.stop()
        return cp

    async def _watch_locks(self, start: int) -> None:
        """Wake the loop on every change of a DDL lock from revision `start` on, and every few
        seconds while a table is held regardless. The watch is set up again every few seconds
        (a stuck one cannot hold a lock up for longer) from the revision after the last event
        it delivered, so nothing falls between two (the old code started each one at the
        revision of that moment: a change just before was missed until the recheck); after an
        etcd error, from the current revision, with a wake-up (`act` reads every lock again)."""
        prefix = self.ddl.locks.prefix + "locks/"
        while True:
            try:
                floor = await self.ctx.mstore.revision() + 1
                async with asyncio.timeout(LOCK_RECHECK_S):
                    async for ev in self.ctx.mstore.kv.watch(prefix, prefix=True,
                                                             start_revision=start):  # fmt: skip
                        start = ev.mod_revision + 1
                        self._lock_changed.set()
            except TimeoutError:
                # What was committed before this watch began has been replayed by now: the
                # next one need not go back further (nor over a long quiet history).
                start = max(start, floor)
            except TopoError as e:
                self.ctx.log.info("DDL lock watch lost; watching again", error=str(e))
                await asyncio.sleep(0.5)
                with contextlib.suppress(TopoError):
                    start = await self.ctx.mstore.revision() + 1
                self._lock_changed.set()
            if self.ctx.status.sync.get("heldTables"):
                self._lock_changed.set()

    # -- steps ---------------------------------------------------------------------------

    def _note_identity(self, identity: ServerIdentity, cp: Checkpoint) -> None:
        """Say so when the source's address answers as another server than in the last run
        (an upstream primary switched behind a VIP), and show who answers in query-status."""
        ctx = self.ctx
        was = ctx.source_identity
        if was is not None and was != identity and self.server.alias is None:
            ctx.log.warning(f"source {self.server.address} now answers as {identity} (was "
                            f"{was}): checking it holds the checkpoint {cp.gtid or '(none)'}")  # fmt: skip
        ctx.source_identity = identity
        ctx.report(sync={"sourceServerId": identity.server_id})

    async def _check_contains(self, checkpoint: str, have: str, s: Session) -> None:
        """The server holds our checkpoint; if not, either it is merely behind (a replica
        that has not yet received what the shard's primary has, or one that has received it
        in its relay log and not applied it yet: wait for it) or the source lost transactions
        the target has (divergence)."""
        if not checkpoint or _contains(self.flavor, have, checkpoint):
            return
        relay = await relay_position(s, self.flavor)
        if relay and _contains(self.flavor, relay, checkpoint):
            raise SourceBehindError(
                f"{self.server.describe()} has received the checkpoint {checkpoint} in its "
                f"relay log but applied only {have or 'nothing'}: waiting for it to catch up"
            )
        primary = await self._primary_position()
        if primary is not None and _contains(self.flavor, primary, checkpoint):
            raise SourceBehindError(
                f"{self.server.describe()} is behind the checkpoint {checkpoint} (it has "
                f"{have or 'nothing'}; the shard's primary has it): waiting for it to catch up"
            )
        missing = parse_gtids(self.flavor, checkpoint).difference(parse_gtids(self.flavor, have))
        raise DivergenceError(
            f"{self.server.describe()} lacks transactions the target already has from "
            f"{self.ctx.source_id}: checkpoint {checkpoint}, server has {have or '(nothing)'}"
            f", missing {missing.body()} (the source lost them, e.g. in a failover or an "
            "upstream switch); resuming here would keep rows downstream that the source no "
            "longer has",
            checkpoint=checkpoint,
            server_position=have,
        )

    async def _primary_position(self) -> str | None:
        """The position of the source shard's primary, when it is another server than the one
        we read (None for an external source, or when the primary does not answer)."""
        shard = self.ctx.source.shard
        if shard is None:
            return None
        try:
            rec = await self.ctx.topo.get_shard(*shard)
            if rec.primary_alias is None or rec.primary_alias == self.server.alias:
                return None
            t = await self.ctx.topo.get_tablet(rec.primary_alias)
            async with await self.ctx.server_session(t.mysql_host, t.mysql_port) as s:
                return (await read_server_state(s)).position
        except (TopoError, MysqlError):
            raise SourceBehindError(
                f"{self.server.describe()} lacks the checkpoint and the shard's primary cannot "
                "be asked now (a failover under way?): trying again"
            ) from None

    def _route(self, db: str, table: str) -> tuple[str, str] | None:
        return self.ctx.spec.route(db, table) if self.ctx.spec.allows(db, table) else None

    def _safe(self, cp: Checkpoint) -> bool:
        if self.ctx.spec.safe_mode:
            return True
        if not cp.safe_mode_until:
            return False
        return not _contains(self.flavor, cp.gtid, cp.safe_mode_until)

    def _gather(
        self, first: Transaction, reader: BinlogReader, cp: Checkpoint
    ) -> list[Transaction]:
        """Whole transactions available now, up to the batch size; a DDL goes alone, and a
        batch ends where safe mode does."""
        batch = [first]
        if first.is_ddl:
            return batch
        rows = first.rows
        safe = self._safe(cp)
        while rows < self.ctx.spec.batch_rows:
            if safe and _contains(self.flavor, batch[-1].position, cp.safe_mode_until):
                break
            nxt = reader.next_nowait()
            if nxt is None:
                break
            if isinstance(nxt, Heartbeat):
                continue
            if nxt.is_ddl:
                # Applied on its own, right after this batch.
                self._pending_ddl = nxt
                break
            batch.append(nxt)
            rows += nxt.rows
        return batch

    async def _apply(
        self, cp: Checkpoint, batch: list[Transaction], *, replaying: bool
    ) -> Checkpoint:
        pending, self._pending_ddl = self._pending_ddl, None
        if batch[0].is_ddl:
            cp = await self._apply_ddl(cp, batch[0], replaying=replaying or self._safe(cp))
        else:
            cp = await self._apply_rows(cp, batch)
        if pending is not None:
            cp = await self._apply_ddl(cp, pending, replaying=self._safe(cp))
        settled = self.ddl.settle(cp)
        if settled is not None:  # the re-read after a DDL lock is over
            cp = await self.ctx.checkpoints.move(self.target, cp, holds=settled)
        return cp

    async def _apply_rows(self, cp: Checkpoint, batch: list[Transaction]) -> Checkpoint:
        ctx, t = self.ctx, self.target
        safe = self._safe(cp)
        changes = [
            c for txn in batch for c in txn.changes
            if isinstance(c, RowChange) and not self.ddl.held(cp, c.db, c.table)
        ]  # fmt: skip
        keys = {(c.target_db, c.target_table) for c in changes}
        for k in keys - self._keys.keys():
            self._keys[k] = (await table_info(t, *k)).key
        statements = change_statements(t.escape, changes, lambda db, tb: self._keys[(db, tb)],
                                       safe_mode=safe)  # fmt: skip
        await t.begin()
        try:
            new_cp = await ctx.checkpoints.fence(t, cp, gtid=batch[-1].position)
            half = len(statements) // 2
            for i, (sql, change) in enumerate(statements):
                if i == half:
                    await ctx.faults.hit("sync.mid_batch")
                try:
                    await t.execute(sql, timeout=120)
                except MysqlServerError as e:
                    if e.code == DUPLICATE_KEY and change.kind == "insert":
                        raise await self._conflict(change, str(e)) from e
                    raise
            await ctx.faults.hit("sync.before_checkpoint")
            await t.commit()
        except BaseException:
            await t.rollback()
            raise
        await ctx.faults.hit("sync.after_batch")
        self.applied_rows += sum(txn.rows for txn in batch)
        self.last_ts = batch[-1].timestamp
        return new_cp

    async def _conflict(self, change: RowChange, detail: str) -> Exception:
        await self.target.rollback()
        key = self._keys[(change.target_db, change.target_table)]
        positions = [change.columns.index(c) for c in key]
        keys = [tuple(r[i] for i in positions) for r in change.rows]
        return await key_conflict(self.ctx, self.target, change.target_db, change.target_table,
                                  key, keys, detail)  # fmt: skip

    async def _apply_ddl(self, cp: Checkpoint, txn: Transaction, *, replaying: bool) -> Checkpoint:
        ctx, t = self.ctx, self.target
        held_here = False
        for change in txn.changes:
            assert isinstance(change, DdlChange)
            sql = self._ddl_for_target(change, cp, txn.position)
            if sql is None:
                continue
            if isinstance(sql, HoldRequest):
                cp = await self.ddl.hold(cp, upstream=sql.upstream, target=sql.target,
                                         ddl=sql.ddl, position=txn.position)  # fmt: skip
                held_here = True
                continue
            try:
                await t.execute(sql, timeout=3600)
            except MysqlServerError as e:
                if not (replaying and e.code in ALREADY_APPLIED_CODES):
                    raise
                ctx.log.info("DDL already applied downstream (replay)", ddl=sql, code=e.code)
            self._keys.clear()
            ctx.log.info("DDL applied", ddl=sql, gtid=txn.gtid)
        if not held_here:
            cp = await ctx.checkpoints.move(t, cp, gtid=txn.position)
        self.last_ts = txn.timestamp
        return cp

    def _ddl_for_target(
        self, change: DdlChange, cp: Checkpoint, position: str
    ) -> str | HoldRequest | None:
        """The DDL to run downstream; a hold for a DDL on a merged table; None when it
        concerns nothing this task moves (or a held table: it comes back when re-read)."""
        spec = self.ctx.spec
        try:
            parsed = parse_ddl(change.query, change.schema)
        except UnparsedDdl as e:
            if change.schema and _db_allowed(spec, change.schema):
                raise UnsupportedDdlError(f"{self.ctx.source_id}: {e}") from None
            return None
        if parsed is None:
            return None
        if parsed.is_table:
            if not spec.allows(parsed.db, parsed.table):
                return None
            if self.ddl.held(cp, parsed.db, parsed.table) or self.ddl.handled(
                cp, parsed.db, parsed.table, position
            ):
                return None
            tdb, ttable = spec.route(parsed.db, parsed.table)
            if self.ctx.is_merged(tdb, ttable) and spec.shard_mode == "pessimistic":
                return HoldRequest(f"{parsed.db}.{parsed.table}", (tdb, ttable),
                                   parsed.for_target(tdb, ttable))  # fmt: skip
            if self.ctx.is_merged(tdb, ttable):
                raise DdlNeedsCoordinationError(
                    f"DDL on {parsed.db}.{parsed.table} from {self.ctx.source_id} reaches merged "
                    f"table {tdb}.{ttable}; it needs shard-mode coordination (sharding DDL "
                    f"locks), so this subtask is paused: {change.query[:300]}"
                )
            return parsed.for_target(tdb, ttable)
        if not _db_allowed(spec, parsed.db):
            return None
        target_db = spec.route_schema(parsed.db)
        if parsed.verb == "DROP" and target_db != parsed.db:
            raise DdlNeedsCoordinationError(
                f"DROP DATABASE {parsed.db} from {self.ctx.source_id} would drop {target_db}, "
                "which other upstream schemas are routed to; paused for coordination"
            )
        return parsed.for_target(target_db)

    def _report(self, cp: Checkpoint, *, caught_up: bool) -> None:
        ctx = self.ctx
        behind = 0.0 if caught_up or not self.last_ts else max(
            0.0, time.time() - self.last_ts
        )  # fmt: skip
        elapsed = max(time.monotonic() - self._started, 1e-3)
        ctx.report(
            stage="Running", error={},
            sync={
                "checkpointGTID": cp.gtid, "safeMode": self._safe(cp),
                "safeModeUntil": cp.safe_mode_until, "secondsBehindMaster": round(behind, 3),
                "rowsApplied": self.applied_rows, "rowsPerSecond": round(self.applied_rows / elapsed),
                "source": self.server.describe(), "caughtUp": caught_up,
            },
        )  # fmt: skip


def _db_allowed(spec: TaskSpec, db: str) -> bool:
    """A schema-level DDL concerns us if the schema holds (or may hold) migrated tables."""
    if db in SYSTEM_SCHEMAS or db == spec.meta_schema:
        return False
    bal = spec.block_allow_list
    if bal.do_dbs:
        return any(fnmatch.fnmatchcase(db, p) for p in bal.do_dbs)
    if bal.do_tables:
        return any(fnmatch.fnmatchcase(db, t.db) for t in bal.do_tables)
    return not any(fnmatch.fnmatchcase(db, p) for p in bal.ignore_dbs)


def _contains(flavor: str, position: str, other: str) -> bool:
    if not other:
        return True
    if not position:
        return False
    return parse_gtids(flavor, position).contains(parse_gtids(flavor, other))


async def _first(aw: Awaitable[Any], *events: asyncio.Event) -> Any:
    """`aw`'s result, or None if one of `events` is set first (then `aw` is cancelled)."""
    task = asyncio.ensure_future(aw)
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait({task, *waiters}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        await cancel_and_wait(task)
        return None
    finally:
        for w in waiters:
            w.cancel()
        if not task.done():
            task.cancel()
