"""Checkpoints live downstream, in the same transactions as the rows they account for.

Two tables in the task's meta schema on the target (DM's names):

- ``<task>_syncer_checkpoint``: one row per source: the binding ``epoch`` that owns it, the GTID
  position applied through (``gtid``: where the sync resumes), the safe-mode exit point
  (``safe_mode_until``), and the load state ('' new, 'loading', 'done').
- ``<task>_loader_checkpoint``: one row per (source, upstream table) being loaded: the last key
  copied (as the SQL literal of a row constructor), rows copied, whether it is done, and the GTID
  of the snapshot the last chunk was read in.

Every downstream transaction of a subtask starts with :meth:`CheckpointTable.fence`: an UPDATE of
its syncer row ``WHERE epoch = <ours>``. It matches no row once another worker has claimed the
subtask with a newer epoch, and the transaction is then rolled back before anything else is
written: a worker that lost its binding can never write again. Taking the row lock first also
orders a claim after any transaction already under way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from migration.errors import FencedError
from migration.schema import qualified, quote
from mysqlctl.errors import MysqlServerError
from mysqlctl.session import Session

LOAD_NEW, LOAD_RUNNING, LOAD_DONE = "", "loading", "done"
UNKNOWN_THREAD = 1094
BOOT_SLACK_S = 3


@dataclass(frozen=True)
class Checkpoint:
    source_id: str
    epoch: int
    gtid: str = ""
    safe_mode_until: str = ""
    load_state: str = LOAD_NEW
    # Upstream tables held by a sharding DDL lock: "db.table" -> {"from": the position right
    # after the DDL (where the table's held DML starts), "lock": the lock id, "target", "ddls"}.
    holds: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TableProgress:
    db: str
    table: str
    last_key: str | None
    rows: int
    done: bool
    snapshot_gtid: str


class CheckpointTable:
    """The checkpoint tables of one task on the target."""

    def __init__(self, meta_schema: str, task: str) -> None:
        self.meta_schema = meta_schema
        self.syncer = qualified(meta_schema, f"{task}_syncer_checkpoint")
        self.loader = qualified(meta_schema, f"{task}_loader_checkpoint")

    async def ensure(self, s: Session) -> None:
        await s.execute(f"CREATE DATABASE IF NOT EXISTS {quote(self.meta_schema)}")
        await s.execute(
            f"CREATE TABLE IF NOT EXISTS {self.syncer} ("
            " source_id VARBINARY(190) NOT NULL PRIMARY KEY,"
            " epoch BIGINT NOT NULL,"
            " seq BIGINT NOT NULL DEFAULT 0,"
            " gtid TEXT NOT NULL,"
            " safe_mode_until TEXT NOT NULL,"
            " load_state VARCHAR(16) NOT NULL DEFAULT '',"
            " holds MEDIUMTEXT NULL,"
            " owner_conn BIGINT NULL,"
            " owner_boot BIGINT NULL,"
            " updated_at DOUBLE NOT NULL) ENGINE=InnoDB"
        )
        await s.execute(
            f"CREATE TABLE IF NOT EXISTS {self.loader} ("
            " source_id VARBINARY(190) NOT NULL,"
            " db VARBINARY(64) NOT NULL,"
            " tbl VARBINARY(64) NOT NULL,"
            " last_key MEDIUMTEXT NULL,"
            " `rows` BIGINT NOT NULL DEFAULT 0,"
            " done TINYINT NOT NULL DEFAULT 0,"
            " snapshot_gtid TEXT NOT NULL,"
            " PRIMARY KEY (source_id, db, tbl)) ENGINE=InnoDB"
        )

    async def drop(self, s: Session) -> None:
        """remove-meta: forget every checkpoint of the task (it starts over)."""
        await s.execute(f"DROP TABLE IF EXISTS {self.syncer}")
        await s.execute(f"DROP TABLE IF EXISTS {self.loader}")

    async def claim(self, s: Session, source_id: str, epoch: int) -> Checkpoint:
        """Make `epoch` the owner of the source's row (creating it) unless a newer epoch owns
        it already (FencedError); returns the checkpoint as this owner finds it.

        The owner's connection is recorded with it. A previous owner's connection is killed
        first: a worker paused or cut off in the middle of a transaction holds the row's lock
        for as long as its connection lives, and would stall its successor (and it could never
        commit anyway: its fence no longer matches)."""
        boot = await _server_boot(s)
        await self._kill_previous_owner(s, source_id, epoch, boot)
        await s.begin()
        try:
            await s.execute(
                f"INSERT INTO {self.syncer} (source_id, epoch, gtid, safe_mode_until, updated_at,"
                " owner_conn, owner_boot) VALUES (%s, %s, '', '', %s, CONNECTION_ID(), %s)"
                # Assignments run left to right: the owner columns see the epoch before it grows.
                " ON DUPLICATE KEY UPDATE"
                " owner_conn = IF(VALUES(epoch) >= epoch, CONNECTION_ID(), owner_conn),"
                " owner_boot = IF(VALUES(epoch) >= epoch, VALUES(owner_boot), owner_boot),"
                " epoch = GREATEST(epoch, VALUES(epoch)), seq = seq + 1",
                (source_id, epoch, time.time(), boot),
            )
            rows = await s.fetch_rows(
                f"SELECT epoch, gtid, safe_mode_until, load_state, holds FROM {self.syncer}"
                " WHERE source_id = %s",
                (source_id,),
            )
            await s.commit()
        except BaseException:
            await s.rollback()
            raise
        owner, gtid, until, state, holds = rows[0]
        if int(owner) != epoch:
            raise FencedError(
                f"subtask {source_id}: binding epoch {epoch} is stale, epoch {owner} owns the "
                "checkpoint (another worker took over)"
            )
        return Checkpoint(source_id, epoch, str(gtid), str(until), str(state),
                          json.loads(holds) if holds else {})  # fmt: skip

    async def _kill_previous_owner(self, s: Session, source_id: str, epoch: int, boot: int) -> None:
        rows = await s.fetch_rows(
            f"SELECT epoch, owner_conn, owner_boot, CONNECTION_ID() FROM {self.syncer}"
            " WHERE source_id = %s",
            (source_id,),
        )
        if not rows:
            return
        owner, conn, conn_boot, mine = rows[0]
        # The same server life only: after a restart, connection ids are handed out again.
        if int(owner) >= epoch or conn is None or conn_boot is None or int(conn) == int(mine):
            return
        if abs(int(conn_boot) - boot) > BOOT_SLACK_S:
            return
        try:
            await s.execute(f"KILL CONNECTION {int(conn)}")
        except MysqlServerError as e:
            if e.code != UNKNOWN_THREAD:
                raise

    async def fence(
        self,
        s: Session,
        cp: Checkpoint,
        *,
        gtid: str | None = None,
        safe_mode_until: str | None = None,
        load_state: str | None = None,
        holds: dict[str, dict[str, Any]] | None = None,
    ) -> Checkpoint:
        """Inside an open transaction: move the checkpoint (fields left None keep their value)
        only if our epoch still owns it; FencedError otherwise (the caller rolls back)."""
        new = Checkpoint(
            cp.source_id,
            cp.epoch,
            cp.gtid if gtid is None else gtid,
            cp.safe_mode_until if safe_mode_until is None else safe_mode_until,
            cp.load_state if load_state is None else load_state,
            cp.holds if holds is None else holds,
        )
        n = await s.execute(
            f"UPDATE {self.syncer} SET gtid = %s, safe_mode_until = %s, load_state = %s,"
            " holds = %s, seq = seq + 1, updated_at = %s WHERE source_id = %s AND epoch = %s",
            (new.gtid, new.safe_mode_until, new.load_state,
             json.dumps(new.holds, sort_keys=True) if new.holds else None, time.time(),
             cp.source_id, cp.epoch),
        )  # fmt: skip
        if n != 1:
            raise FencedError(
                f"subtask {cp.source_id}: the target refused epoch {cp.epoch}'s checkpoint "
                "update (another worker owns this subtask now); nothing was written"
            )
        return new

    async def move(
        self,
        s: Session,
        cp: Checkpoint,
        *,
        gtid: str | None = None,
        safe_mode_until: str | None = None,
        load_state: str | None = None,
        holds: dict[str, dict[str, Any]] | None = None,
    ) -> Checkpoint:
        """A transaction of its own that only moves the checkpoint (fenced like any other)."""
        await s.begin()
        try:
            cp = await self.fence(s, cp, gtid=gtid, safe_mode_until=safe_mode_until,
                                  load_state=load_state, holds=holds)  # fmt: skip
            await s.commit()
        except BaseException:
            await s.rollback()
            raise
        return cp

    async def table_progress(
        self, s: Session, source_id: str
    ) -> dict[tuple[str, str], TableProgress]:
        rows = await s.fetch_rows(
            f"SELECT db, tbl, last_key, `rows`, done, snapshot_gtid FROM {self.loader}"
            " WHERE source_id = %s",
            (source_id,),
        )
        out = {}
        for db, tbl, last, n, done, snap in rows:
            db_s, tbl_s = _text(db), _text(tbl)
            out[(db_s, tbl_s)] = TableProgress(
                db_s, tbl_s, None if last is None else _text(last), int(n), bool(done), str(snap)
            )
        return out

    async def save_table_progress(self, s: Session, source_id: str, p: TableProgress) -> None:
        """Inside the chunk's transaction (after `fence`)."""
        await s.execute(
            f"INSERT INTO {self.loader} (source_id, db, tbl, last_key, `rows`, done, snapshot_gtid)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
            " last_key = VALUES(last_key), `rows` = VALUES(`rows`), done = VALUES(done),"
            " snapshot_gtid = VALUES(snapshot_gtid)",
            (source_id, p.db, p.table, p.last_key, p.rows, int(p.done), p.snapshot_gtid),
        )


async def _server_boot(s: Session) -> int:
    """When the server started (seconds since the epoch, to within a second or so)."""
    rows = await s.fetch_rows(
        "SELECT UNIX_TIMESTAMP() - VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
        " WHERE VARIABLE_NAME = 'UPTIME'"
    )
    return int(float(rows[0][0]))


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes | bytearray) else str(v)
