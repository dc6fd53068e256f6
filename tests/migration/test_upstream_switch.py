"""An external source behind a VIP whose upstream primary is switched (issue 10, item 5).

The VIP is a TCP proxy of the test's own that moves the way a VIP does: open connections are
cut, new ones reach the other server. The subtask notices on its own that the address answers
as another server (server_id), and then, like DM's relay catch-up / pause / switch / resume
procedure but with no person: waits while the new server still applies what its relay log
holds, goes on from the checkpoint once the new server holds it, and pauses with a divergence
error naming the missing GTIDs when the new server lacks rows the target already has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mysqlctl.session import Session, open_session
from orchestrator.local.mariadb import MariadbServer, start_mariadb
from tests.fixtures_cluster import eventually
from tests.helpers.tcp_proxy import TcpProxy
from tests.migration.conftest import (
    MigrationCluster,
    create_shard_table,
    digest,
    insert_rows,
    rows_of,
)

pytestmark = pytest.mark.slow

DB, TABLE = "legacy_db", "orders"
TARGET = ("merged", "orders")


@dataclass
class Upstream:
    """Two external servers, b a replica of a, and a VIP in front of a."""

    mc: MigrationCluster
    a: MariadbServer
    b: MariadbServer
    vip: TcpProxy

    async def session(self, server: MariadbServer) -> Session:
        return await open_session(self.mc.creds.params(server.host, server.port))

    async def replicate_b_from_a(self) -> None:
        async with await self.session(self.b) as s:
            await s.execute(
                "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos",
                (self.a.host, self.a.port, self.mc.creds.user, self.mc.creds.password),
            )
            await s.execute("START SLAVE")

    async def position(self, server: MariadbServer) -> str:
        async with await self.session(server) as s:
            return str((await s.fetch_rows("SELECT @@GLOBAL.gtid_binlog_pos"))[0][0])

    async def b_has_applied_a(self) -> None:
        want = await self.position(self.a)

        async def applied() -> bool:
            async with await self.session(self.b) as s:
                pos = (await s.fetch_rows("SELECT @@GLOBAL.gtid_slave_pos"))[0][0]
            return str(pos) == want

        await eventually(applied, 20, f"b to apply a's {want}")

    async def promote_b(self) -> None:
        """b becomes a primary of its own (a person's or a tool's switch, not ours)."""
        async with await self.session(self.b) as s:
            await s.execute("STOP SLAVE")
            await s.execute("RESET SLAVE ALL")

    async def status(self) -> dict[str, Any]:
        st = await self.mc.ops().query_status("legacy")
        (entry,) = st["sources"]
        sub: dict[str, Any] = entry["subTaskStatus"][0]
        return sub

    async def target_equals(self, server: MariadbServer, timeout: float = 60) -> None:
        async def equal() -> bool:
            async with await self.session(server) as s:
                want = await rows_of(s, DB, TABLE)
            try:
                async with await self.mc.target_session() as t:
                    got = await rows_of(t, *TARGET)
            except Exception:
                return False
            return digest(want) == digest(got)

        await eventually(equal, timeout, f"the target to equal {server.name} row by row", every=0.2)


@pytest.fixture
async def upstream(mcluster: MigrationCluster, tmp_path: Path) -> AsyncIterator[Upstream]:
    a = await start_mariadb(tmp_path / "a", server_id=777, name="legacy-a")
    b = await start_mariadb(tmp_path / "b", server_id=778, name="legacy-b")
    vip = await TcpProxy.start(a.host, a.port)
    up = Upstream(mcluster, a, b, vip)
    try:
        async with await up.session(a) as s:
            await create_shard_table(s, DB, TABLE)
            await insert_rows(s, DB, TABLE, range(1, 301))
        await up.replicate_b_from_a()
        await up.b_has_applied_a()
        mcluster.start_scheduler()
        mcluster.start_worker("w1")
        task = "\n".join(
            [
                "name: legacy",
                "task-mode: all",
                f"target: {{host: {mcluster.target.host}, port: {mcluster.target.port}}}",
                "sources:",
                f"  - source-id: legacy-vip\n    from: {{host: 127.0.0.1, port: {vip.port}}}",
                f'block-allow-list: {{do-dbs: ["{DB}"]}}',
                "routes:",
                f'  - {{schema-pattern: "{DB}", table-pattern: "{TABLE}",',
                f"     target-schema: {TARGET[0]}, target-table: {TARGET[1]}}}",
            ]
        )
        await mcluster.ops().start(task + "\n")
        await up.target_equals(a)
        yield up
    finally:
        await vip.close()
        a.kill()
        b.kill()


async def test_a_switched_upstream_is_waited_for_then_followed_from_the_checkpoint(
    upstream: Upstream,
) -> None:
    up = upstream

    async def reading_from(server_id: int) -> bool:
        return (await up.status()).get("sync", {}).get("sourceServerId") == server_id

    await eventually(lambda: reading_from(777), 10, "the subtask to show it reads server 777")
    # b receives a's next rows in its relay log but does not apply them yet.
    async with await up.session(up.b) as s:
        await s.execute("STOP SLAVE SQL_THREAD")
    async with await up.session(up.a) as s:
        await insert_rows(s, DB, TABLE, range(301, 351))
    await up.target_equals(up.a)
    a_pos = await up.position(up.a)

    async def b_received() -> bool:
        async with await up.session(up.b) as s:
            (row,) = await s.fetch_all("SHOW SLAVE STATUS")
        return str(row["Gtid_IO_Pos"]) == a_pos

    await eventually(b_received, 20, "b's relay log to hold a's rows")
    # The VIP moves to b while b has not applied them: the subtask notices the other server
    # and waits for it instead of reading a binlog that lacks its checkpoint.
    await up.vip.retarget(up.b.host, up.b.port)

    async def waiting_for_b() -> bool:
        sub = await up.status()
        return "SOURCE_BEHIND" in str(sub.get("result")) and "relay log" in str(sub["result"])

    await eventually(waiting_for_b, 20, "the subtask to wait for b's relay log")
    assert (await up.status())["stage"] == "Running"
    # b applies its relay log and is promoted; a dies; the application writes to b.
    async with await up.session(up.b) as s:
        await s.execute("START SLAVE SQL_THREAD")
    await up.b_has_applied_a()
    await up.promote_b()
    up.a.kill()
    async with await up.session(up.b) as s:
        await insert_rows(s, DB, TABLE, range(351, 451))
        await s.execute(f"UPDATE {DB}.{TABLE} SET n = n + 1 WHERE id <= 100")
        await s.execute(f"DELETE FROM {DB}.{TABLE} WHERE id BETWEEN 200 AND 210")
    await up.target_equals(up.b)
    await eventually(lambda: reading_from(778), 10, "the subtask to show it reads server 778")
    assert (await up.status())["stage"] == "Running"


async def test_a_switched_upstream_that_lacks_the_checkpoint_pauses_naming_the_gtids(
    upstream: Upstream,
) -> None:
    up = upstream
    # b stops replicating; a goes on and the target receives what b never will.
    async with await up.session(up.b) as s:
        await s.execute("STOP SLAVE")
    async with await up.session(up.a) as s:
        await insert_rows(s, DB, TABLE, range(301, 341))
    await up.target_equals(up.a)
    checkpoint = await up.position(up.a)
    b_before = await up.position(up.b)
    async with await up.mc.target_session() as t:
        target_before = digest(await rows_of(t, *TARGET))
    await up.promote_b()
    await up.vip.retarget(up.b.host, up.b.port)

    async def paused() -> bool:
        return (await up.status())["stage"] == "Paused"

    await eventually(paused, 20, "the subtask to pause on the diverged server")
    (error,) = (await up.status())["result"]["errors"]
    assert "lacks transactions the target already has" in error["message"]
    assert error["checkpoint"] == checkpoint
    assert error["server_position"] == b_before
    assert f"checkpoint {checkpoint}, server has {b_before}" in error["message"]
    # Nothing was read from b, nothing downstream changed.
    async with await up.mc.target_session() as t:
        assert digest(await rows_of(t, *TARGET)) == target_before
