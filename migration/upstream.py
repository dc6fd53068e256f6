"""Who a source's address answers as, and what that server holds.

An external source is an address (often a VIP or a proxy) that a person may point at another
server at any time: a switch of the upstream primary. The binlog library reconnects by itself
after a lost connection, and would resume on whatever server now answers there without asking
whether it holds what the target already has. So every connection of a sync run is tied to
the identity (`server_id`, and `server_uuid` on MySQL) that the run's divergence check saw:
a connection that meets another server fails with `SourceSwitchedError`, and the subtask runs
the check again on the new server (DM's relay catch-up / pause / switch / resume, done by the
subtask itself):

- it holds the checkpoint: go on from the checkpoint;
- its relay log holds it but it has not applied it yet (a replica promoted an instant ago):
  wait for it (`SourceBehindError`, retried);
- otherwise: pause with a divergence error naming the missing GTIDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pymysql

from mysqlctl.flavor import detect_flavor
from mysqlctl.session import Session


def _identity_sql(flavor: str) -> str:
    if flavor == "MariaDB":
        return "SELECT @@GLOBAL.server_id, ''"
    return "SELECT @@GLOBAL.server_id, @@GLOBAL.server_uuid"


@dataclass(frozen=True)
class ServerIdentity:
    """Which server answered: its `server_id` (and `server_uuid` on MySQL, '' on MariaDB)."""

    server_id: int
    server_uuid: str = ""

    def __str__(self) -> str:
        return f"server_id {self.server_id}" + (
            f" ({self.server_uuid})" if self.server_uuid else ""
        )


@dataclass(frozen=True)
class ServerState:
    """A source server as one sync run starts on it."""

    flavor: str  # the flavor's name: "MariaDB", "MySQL8"
    position: str  # every GTID in its binlog
    identity: ServerIdentity


def _text(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value or "")).replace("\n", "")


async def read_server_state(s: Session) -> ServerState:
    """The flavor, binlog position and identity of the server behind `s`."""
    version = _text((await s.fetch_rows("SELECT @@GLOBAL.version"))[0][0])
    flavor = detect_flavor(version)
    position = _text((await s.fetch_rows(flavor.primary_position().sql))[0][0])
    server_id, uuid = (await s.fetch_rows(_identity_sql(flavor.name)))[0]
    return ServerState(flavor.name, position, ServerIdentity(int(server_id), _text(uuid)))


async def relay_position(s: Session, flavor: str) -> str:
    """What the server has received from its own source but may not have applied yet ('' when
    it replicates from nobody): MariaDB's `Gtid_IO_Pos`, MySQL's `Retrieved_Gtid_Set`."""
    column = "Gtid_IO_Pos" if flavor == "MariaDB" else "Retrieved_Gtid_Set"
    rows = await s.fetch_all("SHOW SLAVE STATUS")
    return _text(rows[0].get(column)) if rows else ""


def identity_of_connection(conn: Any, flavor: str) -> ServerIdentity:
    """The identity of the server behind a (synchronous) PyMySQL connection: what the binlog
    thread asks on each connection it opens."""
    with conn.cursor(pymysql.cursors.Cursor) as cursor:  # tuples, whatever the connection's
        cursor.execute(_identity_sql(flavor))
        server_id, uuid = cursor.fetchone()
    return ServerIdentity(int(server_id), _text(uuid))
