"""What the load and sync units of one subtask run with.

A subtask is one (task, source) pair bound to one worker at one epoch. Its context holds the
task and source specs, the MySQL credentials (from settings, never from etcd), the downstream
session, the checkpoint tables, the fault points and the status it reports. The units read and
write through it and nothing else, so a test can build one directly against real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from migration.checkpoint import CheckpointTable
from migration.faults import FaultPoints
from migration.spec import SourceSpec, TaskSpec
from migration.store import MigrationStore, Stage, SubtaskStatus
from migration.upstream import ServerIdentity
from mysqlctl.client import MysqlParams
from mysqlctl.session import Session, open_session
from topo.store import TopoStore

log = structlog.get_logger(__name__)

STATUS_FLUSH_S = 0.5


@dataclass(frozen=True)
class Credentials:
    """The MySQL account the workers use on sources and target (from settings)."""

    user: str
    password: str = field(repr=False)
    connect_timeout: float = 2.0
    query_timeout: float = 30.0

    def params(self, host: str, port: int, *, query_timeout: float | None = None) -> MysqlParams:
        return MysqlParams(
            host, port, self.user, self.password, connect_timeout=self.connect_timeout,
            query_timeout=self.query_timeout if query_timeout is None else query_timeout,
        )  # fmt: skip


class Stopping(Exception):
    """Raised at a batch or chunk boundary once `SubtaskContext.stopping` is set."""


@dataclass
class SubtaskContext:
    spec: TaskSpec
    source: SourceSpec
    epoch: int
    worker: str
    creds: Credentials
    topo: TopoStore
    mstore: MigrationStore
    faults: FaultPoints = field(default_factory=lambda: FaultPoints(kill_at=frozenset()))
    # Target tables ("db.table") and how many upstream tables of all sources check-task found
    # routed to each (more than one: a merged table).
    targets: dict[str, int] = field(default_factory=dict)
    status: SubtaskStatus = field(init=False)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # Set when the worker drains (SIGTERM, offline-member): the subtask finishes the batch or
    # chunk at hand, commits it with its checkpoint, and ends (`Stopping`).
    stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # Who the source's address answered as in the last sync run (a change: a switched upstream).
    source_identity: ServerIdentity | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.status = SubtaskStatus(
            task=self.spec.name, source=self.source.source_id, worker=self.worker,
            epoch=self.epoch, stage=Stage.NEW,
        )  # fmt: skip
        self.checkpoints = CheckpointTable(self.spec.meta_schema, self.spec.name)
        self.log = log.bind(task=self.spec.name, source=self.source.source_id, epoch=self.epoch)

    @property
    def source_id(self) -> str:
        return self.source.source_id

    async def target_session(self) -> Session:
        t = self.spec.target
        return await self.server_session(t.host, t.port)

    async def server_session(self, host: str, port: int) -> Session:
        """A session in UTC: TIMESTAMP values are read (the load) and written (load and sync;
        the binlog reader gives them in UTC) as the same instants whatever the servers'
        time zones."""
        s = await open_session(self.creds.params(host, port))
        try:
            await s.execute("SET SESSION time_zone = '+00:00'")
        except BaseException:
            await s.close()
            raise
        return s

    def is_merged(self, db: str, table: str) -> bool:
        """Rows of several upstream tables meet in this target table (a DDL on it needs
        coordination). A target check-task did not see (created upstream later) counts as
        merged when a wildcard route with a fixed target table leads to it."""
        count = self.targets.get(f"{db}.{table}")
        if count is not None:
            return count > 1
        return self.spec.merges_by_pattern(db, table)

    # -- status --------------------------------------------------------------------------

    def report(self, **changes: Any) -> None:
        """Change the reported status (flushed to etcd by `flush_status_forever`)."""
        for part in ("load", "sync"):
            if part in changes:
                changes[part] = {**getattr(self.status, part), **changes[part]}
        self.status = dataclasses.replace(self.status, **changes)
        self._dirty.set()

    def report_error(self, exc: BaseException, *, stage: str | None = None) -> None:
        error = {
            "code": getattr(exc, "code", type(exc).__name__),
            "message": str(exc) or type(exc).__name__,
            "time": time.time(),
        }
        for attr in ("key", "table", "sources", "checkpoint", "server_position"):
            value = getattr(exc, attr, None)
            if value:
                error[attr] = value
        self.report(error=error, **({"stage": stage} if stage else {}))

    async def flush_status(self) -> None:
        self._dirty.clear()
        await self.mstore.put_status(self.status)

    async def flush_status_forever(self) -> None:
        """Write the status whenever it changed, at most every STATUS_FLUSH_S."""
        while True:
            await self._dirty.wait()
            with contextlib.suppress(Exception):
                await self.flush_status()
            await asyncio.sleep(STATUS_FLUSH_S)
