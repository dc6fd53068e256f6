"""A subtask's side of the sharding DDL locks (see `migration.shardddl` for the whole life).

Steps, each idempotent and keyed on what is recorded:

- hold: a DDL on an upstream table of a merged target: record the hold in the checkpoint (in
  the same fenced transaction that moves the checkpoint past the DDL), then report the DDL to
  the keeper. The table's later DML is skipped while the hold lasts.
- execute (the owner, lock `executing`): run the DDL on the target, accepting "already
  applied" errors (a re-run after a crash), then record `owner_done` in the lock.
- resume (lock `resuming`, or the lock removed by force): rewind the checkpoint to the hold's
  position with safe mode until where it was and drop the hold, in one fenced transaction; then
  record `resumed` in the lock, and restart the stream there (the held DML is re-read).
- after a restart: report every recorded hold again, and record `resumed` for a lock that
  waits for us although we hold nothing of it any more (killed between the rewind and the mark).
"""

from __future__ import annotations

from typing import Any

from migration.checkpoint import Checkpoint
from migration.context import SubtaskContext
from migration.ddl import ALREADY_APPLIED_CODES
from migration.shardddl import DdlInfo, DdlLock, DdlLockStore, LockState, lock_id
from mysqlctl.errors import MysqlServerError
from mysqlctl.gtid import MariadbGtidSet, MysqlGtidSet, Position
from mysqlctl.session import Session


def _gtids(flavor: str, text: str) -> Position:
    return MariadbGtidSet.parse(text) if flavor == "MariaDB" else MysqlGtidSet.parse(text)


class LockParticipant:
    def __init__(self, ctx: SubtaskContext, target: Session, flavor: str) -> None:
        self.ctx = ctx
        self.target = target
        self.flavor = flavor
        self.locks = DdlLockStore(ctx.mstore)

    def held(self, cp: Checkpoint, db: str, table: str) -> bool:
        h = cp.holds.get(f"{db}.{table}")
        return h is not None and not h.get("released")

    def handled(self, cp: Checkpoint, db: str, table: str, position: str) -> bool:
        """Is the DDL of (db, table) at `position` one a lock has handled already? (Re-read
        after a release: the rewind goes back to the earliest hold, so a later table's DDL of
        the same lock comes by again.)"""
        h = cp.holds.get(f"{db}.{table}")
        return h is not None and bool(h.get("released")) and h["from"] == position

    def settle(self, cp: Checkpoint) -> dict[str, dict[str, Any]] | None:
        """The holds without released ones that the stream has passed for good (past the
        safe-mode window), or None when nothing is to drop."""
        released = [u for u, h in cp.holds.items() if h.get("released")]
        if not released or not cp.safe_mode_until:
            return None
        if not _gtids(self.flavor, cp.gtid).contains(_gtids(self.flavor, cp.safe_mode_until)):
            return None
        return {u: h for u, h in cp.holds.items() if u not in released}

    async def hold(
        self, cp: Checkpoint, *, upstream: str, target: tuple[str, str], ddl: str, position: str
    ) -> Checkpoint:
        """Hold `upstream` from `position` (right after its DDL) and report the DDL."""
        ctx = self.ctx
        lid = lock_id(ctx.spec.name, *target)
        holds = {**cp.holds, upstream: {"from": position, "lock": lid,
                                        "target": ".".join(target), "ddls": [ddl]}}  # fmt: skip
        cp = await ctx.checkpoints.move(self.target, cp, gtid=position, holds=holds)
        ctx.log.info("DDL on a merged table: holding it for the lock", lock=lid, ddl=ddl,
                     upstream=upstream)  # fmt: skip
        await self._report(upstream, holds[upstream])
        return cp

    async def report_holds(self, cp: Checkpoint) -> None:
        for upstream, h in cp.holds.items():
            if not h.get("released"):
                await self._report(upstream, h)

    async def _report(self, upstream: str, h: dict[str, Any]) -> None:
        await self.locks.put_info(DdlInfo(
            task=self.ctx.spec.name, source=self.ctx.source_id, upstream=upstream,
            target=h["target"], ddls=tuple(h["ddls"]),
        ))  # fmt: skip

    async def act(self, cp: Checkpoint) -> tuple[Checkpoint, bool]:
        """Do what the locks ask of us now; (checkpoint, whether the stream must restart at
        the checkpoint because a hold was released)."""
        ctx, me = self.ctx, self.ctx.source_id
        restart = False
        active = {u: h for u, h in cp.holds.items() if not h.get("released")}
        for lid in sorted({h["lock"] for h in active.values()}):
            mine = {u: h for u, h in active.items() if h["lock"] == lid}
            lock = await self.locks.get(lid)
            if lock is None:
                ctx.log.warning("DDL lock removed by force: resuming without its DDL", lock=lid)
                cp = await self._rewind(cp, mine)
                restart = True
            elif lock.state == LockState.EXECUTING and lock.owner == me and not lock.owner_done:
                await self._execute(lock)
            elif lock.state == LockState.RESUMING and me not in lock.resumed:
                await ctx.faults.hit("ddl.before_resume")
                cp = await self._rewind(cp, mine)
                await self._mark_resumed(lid)
                restart = True
        for lock in await self.locks.locks():
            if (lock.task == ctx.spec.name and lock.state == LockState.RESUMING
                    and me in lock.sources and me not in lock.resumed
                    and not any(h["lock"] == lock.id for h in active.values())):  # fmt: skip
                await self._mark_resumed(lock.id)
        self._report_status(cp)
        return cp, restart

    async def _execute(self, lock: DdlLock) -> None:
        ctx = self.ctx
        await ctx.faults.hit("ddl.before_exec")
        for ddl in lock.ddls:
            try:
                await self.target.execute(ddl, timeout=3600)
            except MysqlServerError as e:
                if e.code not in ALREADY_APPLIED_CODES:
                    raise
                ctx.log.info("DDL already applied downstream (re-run)", ddl=ddl, code=e.code)
        ctx.log.info("DDL lock: the owner applied the DDL", lock=lock.id, ddls=list(lock.ddls))
        await ctx.faults.hit("ddl.after_exec")

        def done(lk: DdlLock) -> DdlLock | None:
            if lk.state != LockState.EXECUTING or lk.owner_done or lk.owner != ctx.source_id:
                return None
            return lk.with_note(f"{ctx.source_id} applied the DDL downstream", owner_done=True)

        await self.locks.update(lock.id, done)

    async def _mark_resumed(self, lid: str) -> None:
        me = self.ctx.source_id

        def mark(lk: DdlLock) -> DdlLock | None:
            if me in lk.resumed:
                return None
            return lk.with_note(f"{me} resumed", resumed=(*lk.resumed, me))

        await self.locks.update(lid, mark)

    async def _rewind(self, cp: Checkpoint, released: dict[str, dict[str, Any]]) -> Checkpoint:
        """Back to the earliest released hold, safe mode until where we were; the holds stay
        as `released` (their DDLs are skipped when re-read) until the window is passed."""
        starts = [h["from"] for h in released.values()]
        earliest = next(
            s for s in starts
            if all(_gtids(self.flavor, o).contains(_gtids(self.flavor, s)) for o in starts)
        )  # fmt: skip
        until = cp.gtid
        if cp.safe_mode_until and _gtids(self.flavor, cp.safe_mode_until).contains(
            _gtids(self.flavor, until)
        ):
            until = cp.safe_mode_until
        remaining = {u: ({**h, "released": True} if u in released else h)
                     for u, h in cp.holds.items()}  # fmt: skip
        cp = await self.ctx.checkpoints.move(
            self.target, cp, gtid=earliest, safe_mode_until=until, holds=remaining
        )
        self.ctx.log.info("DDL lock released: re-reading the held DML", rewind_to=earliest,
                          safe_mode_until=until, released=sorted(released))  # fmt: skip
        return cp

    def _report_status(self, cp: Checkpoint) -> None:
        active = {u: h for u, h in cp.holds.items() if not h.get("released")}
        locks = sorted({h["lock"] for h in active.values()})
        ddls = sorted({d for h in active.values() for d in h["ddls"]})
        self.ctx.report(sync={"unresolvedDDLLockID": locks[0] if locks else "",
                              "blockingDDLs": ddls, "heldTables": sorted(active)})  # fmt: skip
