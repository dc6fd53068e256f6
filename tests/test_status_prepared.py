"""`MysqlClient.status()` as health checks use it, against real MariaDB: its statements run
prepared (binary protocol, column definitions parsed once per connection), and that must change
nothing of what a check reports: every check reads the server's state of that moment, a change
of the replication threads or source shows in the very next check, the statements are prepared
once per connection and released with it, and a server that refuses to prepare still gets
checked (text protocol)."""

from __future__ import annotations

import asyncio
import time

from mysqlctl import MysqlClient, ServerStatus
from mysqlctl.flavor import MARIADB
from tests.fixtures_mysql import MariadbFactory, Trio, mysql_params_for, wait_replicating
from tests.helpers.ports import refused_port


async def text_protocol_status(client: MysqlClient) -> ServerStatus:
    """The snapshot as the former client read it: the same statements in the text protocol."""
    results = [await client.fetch_all(sql) for sql in MARIADB.status_queries()]
    return MARIADB.parse_status(results)


async def global_status(client: MysqlClient, name: str) -> int:
    row = await client.fetch_one("SHOW GLOBAL STATUS LIKE %s", (name,))
    assert row is not None, name
    return int(row["Value"])


async def test_prepared_status_reads_what_the_text_protocol_reads(replicated_trio: Trio) -> None:
    _servers, clients = replicated_trio
    primary = clients[0]
    await primary.execute("CREATE DATABASE app")
    await primary.execute("CREATE TABLE app.t (id INT PRIMARY KEY)")
    await primary.execute("INSERT INTO app.t VALUES (1)")
    position = await primary.primary_position()
    for replica in clients[1:]:
        await replica.wait_for_position(position, 5)
    for client in clients:
        first = await client.status()  # prepares, parses the column definitions
        second = await client.status()  # reuses them
        assert first == second == await text_protocol_status(client)
    replication = (await clients[1].status()).replication
    assert replication is not None and replication.lag_seconds == 0
    assert replication.received.contains(position) and replication.applied.contains(position)


async def test_the_next_check_sees_a_replication_change(replicated_trio: Trio) -> None:
    """What today's full read reports at once, the prepared read reports at once: threads
    stopped, a new source, a source that refuses (Connecting, then the IO error), and back."""
    servers, (_primary, replica, _other) = replicated_trio
    checker = MysqlClient(mysql_params_for(servers[1]))  # as the health checker's own client
    try:
        before = (await checker.status()).replication
        assert before is not None and before.io_state == "Yes" and before.sql_running

        await replica.stop_io_thread()
        stopped = (await checker.status()).replication
        assert stopped is not None
        assert (stopped.io_running, stopped.io_state, stopped.sql_running) == (False, "No", True)
        assert stopped.lag_seconds is None

        await replica.stop_replication()
        both = (await checker.status()).replication
        assert both is not None and not both.io_running and not both.sql_running

        with refused_port() as port:
            await replica.set_replication_source(
                "127.0.0.1", port, user="orc", password="x", semi_sync=False
            )
            moved = (await checker.status()).replication
            assert moved is not None
            assert (moved.source_host, moved.source_port) == ("127.0.0.1", port)
            assert not moved.io_running and moved.sql_running
            deadline = time.monotonic() + 5
            while True:
                failing = (await checker.status()).replication
                assert failing is not None
                if failing.last_io_error:
                    break
                assert time.monotonic() < deadline, "no IO error reported"
                await asyncio.sleep(0.05)
            assert failing.io_state in ("Connecting", "No") and not failing.io_running

        await replica.set_replication_source(
            servers[0].host,
            servers[0].port,
            user=servers[0].admin_user,
            password=servers[0].admin_password,
            semi_sync=False,
        )
        await wait_replicating(checker)
        back = (await checker.status()).replication
        assert back is not None and back.source_port == servers[0].port
        assert back.last_io_error == ""

        await replica.set_read_only(False)
        assert (await checker.status()).read_only is False
    finally:
        await checker.close()


async def test_statements_are_prepared_once_per_connection_and_released_with_it(
    mariadb_factory: MariadbFactory,
) -> None:
    (server,) = await mariadb_factory(1)
    async with MysqlClient(mysql_params_for(server)) as observer:
        checker = MysqlClient(mysql_params_for(server))
        prepares = await global_status(observer, "Com_stmt_prepare")
        executes = await global_status(observer, "Com_stmt_execute")
        for _ in range(5):
            await checker.status()
        assert await global_status(observer, "Com_stmt_prepare") - prepares == 2
        assert await global_status(observer, "Com_stmt_execute") - executes == 10
        assert await global_status(observer, "Prepared_stmt_count") == 2

        # A connection lost under the client: the next check reconnects and prepares again.
        row = await checker.fetch_one("SELECT CONNECTION_ID() AS id")
        assert row is not None
        await observer.execute(f"KILL {int(row['id'])}")
        assert (await checker.status()).server_id == server.server_id
        assert await global_status(observer, "Com_stmt_prepare") - prepares == 4

        await checker.close()
        deadline = time.monotonic() + 5
        while await global_status(observer, "Prepared_stmt_count") != 0:
            assert time.monotonic() < deadline, "prepared statements outlived the connection"
            await asyncio.sleep(0.05)


async def test_a_server_that_refuses_to_prepare_is_checked_in_the_text_protocol(
    mariadb_factory: MariadbFactory,
) -> None:
    """At its prepared statement limit (here 0), a server still answers health checks."""
    (server,) = await mariadb_factory(1, extra_options={"max-prepared-stmt-count": "0"})
    async with MysqlClient(mysql_params_for(server)) as checker:
        status = await checker.status()
        assert status.server_id == server.server_id and status.replication is None
        assert await checker.status() == status == await text_protocol_status(checker)
        assert await global_status(checker, "Prepared_stmt_count") == 0
