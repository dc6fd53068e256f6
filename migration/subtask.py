"""One subtask, from its binding to the end: claim, load, sync, follow the source, recover.

Steps:

1. Claim the downstream checkpoint for our binding epoch (a newer epoch there: we are fenced).
2. Load, if the task mode has a load and it is not done (`migration.load`); for an incremental
   task, record the start position instead (the one given, or the source's current one).
3. A full-mode task is Finished here.
4. Sync (`migration.sync`) from the checkpoint, on the server the source resolves to now. For a
   shard source, a watch on the shard's serving graph re-resolves it on every change; when the
   tablet to read from changes, the sync stops at a transaction boundary and step 4 starts
   again on the new server (DM's manual "pause, switch, resume", without a person). Step 4
   also starts again when a sharding DDL lock releases a held table (`migration.shardddl`).
5. Drain (the worker stops: SIGTERM, offline-member): `ctx.stopping` ends the sync at the
   next transaction boundary and the load after the chunk at hand, each committed with its
   checkpoint; the subtask ends without an error and its successor goes on from there.
6. Failures: an unreachable source or target is retried with growing backoff and clears by
   itself; a pausing error (divergence, key conflict, DDL needing coordination) pauses the
   subtask in the task record until resume-task; a fenced subtask stops without writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from migration.aio import cancel_and_wait
from migration.checkpoint import LOAD_DONE, LOAD_NEW, Checkpoint
from migration.context import Stopping, SubtaskContext
from migration.errors import (
    FencedError,
    PausingError,
    SourceSwitchedError,
    SourceUnavailableError,
    TargetUnavailableError,
)
from migration.load import run_load
from migration.sources import SourceServer, resolve_source
from migration.store import Stage
from migration.sync import Syncer
from migration.upstream import read_server_state
from mysqlctl.errors import MysqlError, MysqlServerError, MysqlTimeoutError, MysqlUnreachableError
from mysqlctl.session import Session
from topo.errors import TopoError

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0
SWITCH_DEBOUNCE_S = 0.05
# An upstream switch is checked again at once at most this often (otherwise with the backoff).
SWITCH_RETRY_AT_ONCE_S = 5.0
# Server errors that are a server's passing state rather than our mistake: retried.
_TRANSIENT_SERVER_CODES = frozenset({1205, 1213, 1290, 1927, 1053, 2013})


class SubtaskRunner:
    def __init__(
        self, ctx: SubtaskContext, *, on_pause: Callable[[BaseException], object] | None = None
    ) -> None:
        self.ctx = ctx
        self.on_pause = on_pause
        self.server: SourceServer | None = None
        self._avoid: set[str] = set()

    async def _run(self) -> None:
        ctx = self.ctx
        flusher = asyncio.create_task(ctx.flush_status_forever(), name=f"status {ctx.source_id}")
        ctx.report(stage=Stage.RUNNING)
        backoff = BACKOFF_MIN_S
        last_switch = -SWITCH_RETRY_AT_ONCE_S
        try:
            while not ctx.stopping.is_set():
                try:
                    finished = await self._run_once()
                except Stopping:
                    ctx.log.info("subtask stopped at a batch boundary: its worker drains")
                    return
                except FencedError as e:
                    ctx.log.warning("fenced: another worker owns this subtask now", error=str(e))
                    ctx.report_error(e, stage=Stage.STOPPED)
                    return
                except PausingError as e:
                    ctx.log.warning("subtask paused", error=str(e))
                    ctx.report_error(e, stage=Stage.PAUSED)
                    if self.on_pause is not None:
                        await _maybe_await(self.on_pause(e))
                    return
                except Exception as e:
                    if not _retryable(e):
                        ctx.log.error("subtask paused on an unexpected error", error=repr(e),
                                      exc_info=e)  # fmt: skip
                        ctx.report_error(e, stage=Stage.PAUSED)
                        if self.on_pause is not None:
                            await _maybe_await(self.on_pause(e))
                        return
                    outage = self._outage(e)
                    ctx.log.info("subtask retrying", error=str(outage), backoff_s=backoff)
                    ctx.report_error(outage, stage=Stage.RUNNING)
                    if isinstance(outage, SourceSwitchedError) and (
                        time.monotonic() - last_switch > SWITCH_RETRY_AT_ONCE_S
                    ):
                        # The new server is checked at once (once: an address that answers as
                        # a different server each time, a balancer, backs off like an outage).
                        last_switch = time.monotonic()
                        continue
                    if (
                        self.server is not None
                        and self.server.alias
                        and isinstance(outage, SourceUnavailableError)
                    ):
                        self._avoid.add(self.server.alias)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await ctx.stopping.wait()
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                if finished:
                    ctx.report(stage=Stage.FINISHED, error={})
                    return
                backoff = BACKOFF_MIN_S
        finally:
            await cancel_and_wait(flusher)

    async def run(self) -> None:
        """Until cancelled, finished, paused or fenced. The last status is written when the
        subtask ends by itself; a cancelled one (stopped, rebound) leaves the status to its
        successor."""
        await self._run()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.ctx.flush_status()

    async def _run_once(self) -> bool:
        """Steps 1-4 once; True when the subtask is finished (full mode). A source switch
        returns False (run again at once)."""
        ctx = self.ctx
        try:
            target = await ctx.target_session()
        except MysqlError as e:
            raise TargetUnavailableError(f"target {ctx.spec.target.address}: {e}") from e
        async with target:
            await ctx.checkpoints.ensure(target)
            # 1. claim
            cp = await ctx.checkpoints.claim(target, ctx.source_id, ctx.epoch)
            ctx.report(sync={"checkpointGTID": cp.gtid}, load={"state": cp.load_state or "new"})
            # 2. load / start position
            if cp.load_state != LOAD_DONE:
                self.server = await self._resolve()
                if ctx.spec.task_mode == "incremental":
                    cp = await self._record_start(target, cp, self.server)
                else:
                    cp = await run_load(ctx, target, self.server, cp)
            # 3. finished
            if ctx.spec.task_mode == "full":
                return True
            # 4. sync, following the source
            while True:
                self.server = await self._resolve()
                switch = asyncio.Event()
                watcher = asyncio.create_task(self._watch_source(switch), name="source watch")
                stopper = asyncio.create_task(_set_when(ctx.stopping, switch), name="stopper")
                syncer = Syncer(ctx, target, self.server)
                try:
                    cp = await syncer.run(cp, switch)
                finally:
                    await cancel_and_wait(watcher)
                    await cancel_and_wait(stopper)
                if ctx.stopping.is_set():  # the batch at hand is committed with its checkpoint
                    raise Stopping()
                if syncer.rewound:  # a DDL lock released a hold: re-read from the checkpoint
                    continue
                ctx.log.info("source changed; switching at a transaction boundary",
                             was=self.server.describe(), checkpoint=cp.gtid)  # fmt: skip
                await ctx.faults.hit("sync.during_switch")
                self._avoid.clear()

    def _outage(self, e: BaseException) -> BaseException:
        """A retryable error as the person on call reads it: which side is away (the source's
        server or the target), whatever layer noticed first."""
        if isinstance(e, SourceUnavailableError | TargetUnavailableError):
            return e
        address = getattr(e, "address", None)
        if address is not None and address == self.ctx.spec.target.address:
            return TargetUnavailableError(f"target {address}: {e}")
        if self.server is not None and address == self.server.address:
            return SourceUnavailableError(f"source {self.server.describe()}: {e}")
        return e

    async def _resolve(self) -> SourceServer:
        current = self.server.alias if self.server else None
        return await resolve_source(
            self.ctx.topo, self.ctx.mstore, self.ctx.source, current=current, avoid=self._avoid
        )

    async def _record_start(
        self, target: Session, cp: Checkpoint, server: SourceServer
    ) -> Checkpoint:
        ctx = self.ctx
        start = ctx.source.start_gtid
        if not start:
            async with await ctx.server_session(server.host, server.port) as s:
                start = (await read_server_state(s)).position
        cp = await ctx.checkpoints.move(target, cp, gtid=start, load_state=LOAD_DONE)
        assert cp.load_state != LOAD_NEW
        return cp

    async def _watch_source(self, switch: asyncio.Event) -> None:
        """Set `switch` when the shard's serving graph changes so that the best tablet to read
        is another one (a shard source only; an external server never moves)."""
        shard = self.ctx.source.shard
        if shard is None:
            await asyncio.Event().wait()
            return
        ks, _ = shard
        topo = self.ctx.topo
        suffix = f"/serving/{ks}"
        start = await topo.kv.revision() + 1
        # Something may have changed between resolving and watching: check once first.
        if await self._moved():
            switch.set()
            return
        async for ev in topo.kv.watch(f"{topo.root}/cells/", prefix=True, start_revision=start):
            if not ev.key.endswith(suffix):
                continue
            await asyncio.sleep(SWITCH_DEBOUNCE_S)
            if await self._moved():
                switch.set()
                return

    async def _moved(self) -> bool:
        try:
            best = await self._resolve()
        except (SourceUnavailableError, TopoError):
            return False
        return self.server is None or best.alias != self.server.alias


def _retryable(e: BaseException) -> bool:
    if isinstance(e, SourceUnavailableError | TargetUnavailableError | TopoError):
        return True
    if isinstance(e, MysqlUnreachableError | MysqlTimeoutError):
        return True
    if isinstance(e, MysqlServerError):
        return e.code in _TRANSIENT_SERVER_CODES
    return isinstance(e, TimeoutError | ConnectionError)


async def _set_when(cause: asyncio.Event, effect: asyncio.Event) -> None:
    await cause.wait()
    effect.set()


async def _maybe_await(value: object) -> None:
    if asyncio.iscoroutine(value):
        await value
