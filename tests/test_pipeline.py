"""Pipelined prepared statements (`mysqlctl.pipeline`) against a real MariaDB server: every
statement's answer comes back in order and in step with the server, over hundreds of rounds;
all of a round goes out in one write; a statement that fails raises its error while the
connection stays usable for the next round; and `MysqlClient.status()` pipelines its two
statements and still recovers from a connection killed under it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncmy import errors as driver_errors
from asyncmy.connection import Connection
from asyncmy.cursors import DictCursor

from mysqlctl import MysqlClient, pipeline
from mysqlctl.client import open_connection
from tests.fixtures_mysql import MariadbFactory, mysql_params_for


async def _connect(mariadb_factory: MariadbFactory) -> tuple[Connection, MysqlClient]:
    (server,) = await mariadb_factory(1)
    conn = await open_connection(mysql_params_for(server), cursorclass=DictCursor)
    return conn, MysqlClient(mysql_params_for(server))


async def _counter(observer: MysqlClient, name: str) -> int:
    row = await observer.fetch_one("SHOW GLOBAL STATUS LIKE %s", (name,))
    assert row is not None
    return int(row["Value"])


async def test_answers_come_back_in_order_round_after_round(
    mariadb_factory: MariadbFactory,
) -> None:
    conn, observer = await _connect(mariadb_factory)
    try:
        statements = [
            await conn.prepare("SELECT 1 AS one"),
            await conn.prepare("SELECT 'two' AS two, 2 AS n"),
            await conn.prepare("SELECT @@GLOBAL.server_id AS id, CONNECTION_ID() AS conn"),
        ]
        assert pipeline.pipelines(conn)
        executes = await _counter(observer, "Com_stmt_execute")
        first = await pipeline.execute_pipelined(conn, statements)
        assert first[0] == [{"one": 1}] and first[1] == [{"two": "two", "n": 2}]
        assert set(first[2][0]) == {"id", "conn"}
        for _ in range(300):
            assert await pipeline.execute_pipelined(conn, statements) == first
        assert await _counter(observer, "Com_stmt_execute") - executes == 301 * 3
        # The same rows as one statement at a time.
        assert await pipeline.execute_each(statements) == first
    finally:
        conn.close()
        await observer.close()


async def test_a_round_goes_out_in_one_write(mariadb_factory: MariadbFactory) -> None:
    conn, observer = await _connect(mariadb_factory)
    try:
        statements = [await conn.prepare(f"SELECT {n} AS n") for n in range(4)]
        writes: list[bytes] = []
        write = conn._write_bytes  # type: ignore[attr-defined]

        def spy(data: bytes) -> None:
            writes.append(data)
            write(data)

        conn._write_bytes = spy  # type: ignore[attr-defined]
        rows = await pipeline.execute_pipelined(conn, statements)
        assert rows == [[{"n": n}] for n in range(4)]
        assert len(writes) == 1
        writes.clear()
        await pipeline.execute_each(statements)
        assert len(writes) == 4  # what pipelining saves
    finally:
        conn.close()
        await observer.close()


@pytest.mark.parametrize("failing", [0, 1, 2])
async def test_a_failing_statement_raises_and_the_connection_stays_in_step(
    mariadb_factory: MariadbFactory, failing: int
) -> None:
    conn, observer = await _connect(mariadb_factory)
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE DATABASE app")
            await cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY)")
            await cur.execute("INSERT INTO app.t VALUES (7)")
        good = [await conn.prepare("SELECT 1 AS a"), await conn.prepare("SELECT 2 AS b")]
        doomed = await conn.prepare("SELECT id FROM app.t")
        statements: list[Any] = list(good)
        statements.insert(failing, doomed)
        assert (await pipeline.execute_pipelined(conn, statements))[failing] == [{"id": 7}]
        async with conn.cursor() as cur:
            await cur.execute("DROP TABLE app.t")
        with pytest.raises(driver_errors.ProgrammingError) as caught:
            await pipeline.execute_pipelined(conn, statements)
        assert caught.value.args[0] == 1146  # ER_NO_SUCH_TABLE
        # The answers after the error were read: the next rounds get their own answers, not
        # the failed round's (other statements, so that a stale answer could not pass).
        others = [await conn.prepare("SELECT 3 AS c"), await conn.prepare("SELECT 4 AS d")]
        for _ in range(3):
            assert await pipeline.execute_pipelined(conn, others) == [[{"c": 3}], [{"d": 4}]]
    finally:
        conn.close()
        await observer.close()


async def test_status_pipelines_and_recovers_from_a_killed_connection(
    mariadb_factory: MariadbFactory,
) -> None:
    (server,) = await mariadb_factory(1)
    async with MysqlClient(mysql_params_for(server)) as observer:
        checker = MysqlClient(mysql_params_for(server))
        try:
            first = await checker.status()
            assert checker._conn is not None and pipeline.pipelines(checker._conn)
            for _ in range(20):
                assert await checker.status() == first
            row = await checker.fetch_one("SELECT CONNECTION_ID() AS id")
            assert row is not None
            await observer.execute(f"KILL {int(row['id'])}")
            assert await checker.status() == first
            # Cancelled while its answers are on their way: the next check starts afresh.
            task = asyncio.create_task(checker.status())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await checker.status() == first
        finally:
            await checker.close()
