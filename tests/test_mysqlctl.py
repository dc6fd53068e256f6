"""mysqlctl against real MariaDB servers: status, fencing, promotion, repointing, waits, errant
GTIDs, semi-sync, the journal, and how failures (refused, silent, slow servers) surface."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from mysqlctl import (
    MariadbGtidSet,
    MysqlClient,
    MysqlParams,
    MysqlServerError,
    MysqlTimeoutError,
    MysqlUnreachableError,
    Position,
    ReplicationError,
    ReplicationStatus,
    WaitTimeoutError,
    read_journal,
    wait_for_journal_entry,
    write_journal_entry,
)
from orchestrator.local.mariadb import MariadbServer, free_port
from tests.fixtures_mysql import (
    MariadbFactory,
    Trio,
    app_params_for,
    attach_replica,
    mysql_params_for,
    wait_replicating,
)
from tests.helpers.ports import refused_port

ER_OPTION_PREVENTS_STATEMENT = 1290  # read_only refused the write


async def create_table(primary: MysqlClient) -> None:
    await primary.execute("CREATE DATABASE IF NOT EXISTS app")
    await primary.execute("CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY, v VARCHAR(20))")


async def count_rows(client: MysqlClient) -> int:
    row = await client.fetch_one("SELECT COUNT(*) AS n FROM app.t")
    assert row is not None
    return int(row["n"])


async def replication_of(client: MysqlClient) -> ReplicationStatus:
    replication = await client.replication_status()
    assert replication is not None, f"{client.address} is not a replica"
    return replication


async def wait_received(replica: MysqlClient, position: Position, timeout: float = 5.0) -> None:
    """Until the replica's IO thread has fetched ``position`` (applied or not)."""
    deadline = time.monotonic() + timeout
    while not (await replication_of(replica)).received.contains(position):
        assert time.monotonic() < deadline, f"{replica.address} did not receive {position}"
        await asyncio.sleep(0.01)


async def wait_rows(client: MysqlClient, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (n := await count_rows(client)) != expected:
        assert time.monotonic() < deadline, f"{client.address}: {n} rows, expected {expected}"
        await asyncio.sleep(0.01)


# -- status ---------------------------------------------------------------------------------------


async def test_status_of_primary_and_replicas(replicated_trio: Trio) -> None:
    servers, (primary, replica1, replica2) = replicated_trio
    await create_table(primary)
    await primary.execute("INSERT INTO app.t VALUES (1, 'a')")
    position = await primary.primary_position()
    await replica1.wait_for_position(position, 5)
    await replica2.wait_for_position(position, 5)

    status = await primary.status()
    assert status.server_id == servers[0].server_id
    assert "MariaDB" in status.version
    assert status.read_only is False
    assert status.replication is None
    assert status.position == position
    assert status.errant.is_empty()

    status = await replica1.status()
    assert status.server_id == servers[1].server_id
    assert status.read_only is True
    assert status.errant.is_empty()
    replication = status.replication
    assert replication is not None
    assert (replication.source_host, replication.source_port) == (servers[0].host, servers[0].port)
    assert replication.io_running and replication.sql_running and replication.io_state == "Yes"
    assert replication.applied.contains(position)
    assert replication.received.contains(position)
    assert replication.last_io_error == replication.last_sql_error == ""
    assert status.position.contains(position)  # log_slave_updates
    assert await replica1.replication_status() is not None
    assert await primary.replication_status() is None


# -- demotion and fencing -------------------------------------------------------------------------


async def test_demote_fences_app_writes_and_returns_final_position(replicated_trio: Trio) -> None:
    servers, (primary, *_) = replicated_trio
    await create_table(primary)
    async with MysqlClient(app_params_for(servers[0])) as app:
        await app.execute("INSERT INTO app.t VALUES (1, 'before')")
        position = await primary.demote()
        assert position == await primary.primary_position()
        assert (await primary.status()).read_only is True
        with pytest.raises(MysqlServerError) as refused:
            await app.execute("INSERT INTO app.t VALUES (2, 'after')")
        assert refused.value.code == ER_OPTION_PREVENTS_STATEMENT
        assert refused.value.address == servers[0].address
    assert await primary.primary_position() == position  # nothing slipped in after the fence
    await primary.set_read_only(False)
    assert (await primary.status()).read_only is False


async def test_kill_connections_ends_app_sessions(replicated_trio: Trio) -> None:
    servers, (primary, *_) = replicated_trio
    async with MysqlClient(app_params_for(servers[0])) as app:
        assert await primary.kill_connections(servers[0].app_user) == 1
        # The app's next read reconnects transparently; its connection really was killed.
        assert await app.fetch_one("SELECT 1 AS one") == {"one": 1}
    assert await primary.fetch_one("SELECT 1 AS one") == {"one": 1}


# -- waiting for positions ----------------------------------------------------------------------


async def test_wait_for_position_returns_once_replica_applied_it(replicated_trio: Trio) -> None:
    _, (primary, replica1, _) = replicated_trio
    await create_table(primary)
    for i in range(20):
        await primary.execute("INSERT INTO app.t VALUES (%s, 'x')", (i,))
    position = await primary.primary_position()
    await replica1.wait_for_position(position, 5)
    assert await count_rows(replica1) == 20
    await replica1.wait_for_position(MariadbGtidSet(), 0)  # empty: nothing to wait for


async def test_wait_for_position_never_returns_before_the_rows_are_visible(
    replicated_trio: Trio,
) -> None:
    """A replica writes a replicated transaction to its binlog before the engine commit makes
    the rows visible. A wait that trusted the binlog position returned in that window once in
    a few hundred waits (seen in CI: 19 of 20 rows); each round here writes one row and reads
    it on the replica straight after the wait."""
    _, (primary, replica1, _) = replicated_trio
    await create_table(primary)
    for i in range(300):
        await primary.execute("INSERT INTO app.t VALUES (%s, 'x')", (i,))
        await replica1.wait_for_position(await primary.primary_position(), 5)
        assert await count_rows(replica1) == i + 1, f"round {i}"


@contextlib.asynccontextmanager
async def sql_thread_held_up(
    server: MariadbServer, primary: MysqlClient, replica: MysqlClient
) -> AsyncIterator[Position]:
    """Within the block the replica's SQL thread runs but cannot apply the primary's newest
    transaction (a transaction of the test holds the row it updates): a slow replica, not a
    broken one. Yields the position it cannot reach."""
    await create_table(primary)
    await primary.execute("INSERT INTO app.t VALUES (1, 'x') ON DUPLICATE KEY UPDATE v = 'x'")
    await replica.wait_for_position(await primary.primary_position(), 5)
    async with MysqlClient(mysql_params_for(server)) as blocker:
        await blocker.execute("BEGIN")
        await blocker.fetch_all("SELECT * FROM app.t WHERE id = 1 FOR UPDATE", retry=False)
        await primary.execute("UPDATE app.t SET v = 'y' WHERE id = 1")
        yield await primary.primary_position()
        await blocker.execute("ROLLBACK")


async def test_wait_for_position_times_out_cleanly_when_replica_is_slow(
    replicated_trio: Trio,
) -> None:
    servers, (primary, replica1, _) = replicated_trio
    async with sql_thread_held_up(servers[1], primary, replica1) as position:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as timed_out:
            await replica1.wait_for_position(position, 1.0)
        elapsed = time.monotonic() - started
    # Gives up at its deadline, not before, and does not hang (by how much it overruns the
    # deadline is a figure of `python -m bench.timeouts`).
    assert 0.9 < elapsed < 5.0
    assert timed_out.value.address == replica1.address
    assert timed_out.value.target == position
    assert timed_out.value.reached is not None
    assert not timed_out.value.reached.contains(position)
    # The client is still usable, and the replica catches up once the row is free.
    await replica1.wait_for_position(position, 5)


async def test_wait_for_position_fails_fast_when_sql_thread_stopped(
    replicated_trio: Trio,
) -> None:
    servers, (primary, replica1, _) = replicated_trio
    await replica1.execute("STOP SLAVE SQL_THREAD")
    await create_table(primary)
    position = await primary.primary_position()
    started = time.monotonic()
    with pytest.raises(ReplicationError, match="SQL thread stopped") as stopped:
        await replica1.wait_for_position(position, 20)
    assert time.monotonic() - started < 3, "waited for a position that could not come"
    assert not isinstance(stopped.value, WaitTimeoutError)
    assert stopped.value.address == replica1.address
    # The abandoned MASTER_GTID_WAIT does not linger on the server.
    async with MysqlClient(mysql_params_for(servers[1])) as other:
        assert not await other.fetch_all(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%MASTER_GTID_WAIT%'"
            " AND ID <> CONNECTION_ID()"
        )
    await replica1.start_replication()
    await replica1.wait_for_position(position, 5)


async def diverge(replica: MysqlClient) -> None:
    """Make the replica ask its source for a GTID the source never had, as a former primary
    that committed a transaction nobody received asks after coming back: its IO thread stops
    with error 1236 as soon as it connects.

    The GTID is the next sequence number, from another server id: a larger one would make
    MASTER_GTID_WAIT, which compares sequence numbers only, count later positions as reached.
    """
    position = (await replication_of(replica)).applied
    assert isinstance(position, MariadbGtidSet)
    (gtid,) = position.gtids
    await replica.execute("STOP SLAVE")
    await replica.execute(f"SET GLOBAL gtid_slave_pos = '{gtid.domain}-999-{gtid.seq + 1}'")
    await replica.execute("START SLAVE")


async def test_waits_fail_fast_when_the_source_lacks_the_replicas_gtids(
    replicated_trio: Trio,
) -> None:
    _, (primary, replica1, replica2) = replicated_trio
    await create_table(primary)
    position = await primary.primary_position()
    await asyncio.gather(*(r.wait_for_position(position, 5) for r in (replica1, replica2)))
    await asyncio.gather(diverge(replica1), diverge(replica2))
    await primary.execute("INSERT INTO app.t VALUES (1, 'x')")
    entry = await write_journal_entry(primary, "PlannedReparentShard", "zone1-101", None)
    position = await primary.primary_position()
    started = time.monotonic()
    with pytest.raises(ReplicationError, match="IO thread stopped with error 1236") as journal:
        await wait_for_journal_entry(replica1, entry.time_created_ns, 20)
    assert time.monotonic() - started < 3, "waited for a journal row that could not come"
    assert not isinstance(journal.value, WaitTimeoutError)
    assert (journal.value.address, journal.value.code) == (replica1.address, 1236)
    assert "1236" in journal.value.io_error
    started = time.monotonic()
    with pytest.raises(ReplicationError, match="IO thread stopped with error 1236") as wait:
        await replica2.wait_for_position(position, 20)
    assert time.monotonic() - started < 3, "waited for a position that could not come"
    assert (wait.value.address, wait.value.code) == (replica2.address, 1236)


async def test_journal_wait_goes_on_while_the_source_cannot_be_reached(
    replicated_trio: Trio,
) -> None:
    servers, (primary, replica1, _) = replicated_trio
    entry = await write_journal_entry(primary, "PlannedReparentShard", "zone1-101", None)
    with refused_port() as port:  # the server retries: connect errors may be transient
        await replica1.set_replication_source(
            "127.0.0.1", port, user="orc", password="x", semi_sync=False
        )
        deadline = time.monotonic() + 5
        while not (replication := await replication_of(replica1)).last_io_errno:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert replication.io_state == "Connecting" and replication.stalled() is None
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError):
            await wait_for_journal_entry(replica1, entry.time_created_ns, 1.0)
        assert time.monotonic() - started >= 1.0
    await attach_replica(replica1, servers[0])
    await wait_for_journal_entry(replica1, entry.time_created_ns, 5)


async def test_wait_for_position_does_not_block_other_calls(replicated_trio: Trio) -> None:
    servers, (primary, replica1, _) = replicated_trio
    async with sql_thread_held_up(servers[1], primary, replica1) as position:
        waiting = asyncio.create_task(replica1.wait_for_position(position, 5))

        # The wait is running on the replica (its statement is in the replica's process list).
        async with MysqlClient(mysql_params_for(servers[1])) as other:
            deadline = time.monotonic() + 5
            while not (await other.fetch_all(
                "SELECT ID FROM information_schema.PROCESSLIST"
                " WHERE INFO LIKE '%MASTER_GTID_WAIT%' AND ID <> CONNECTION_ID()"
            )):  # fmt: skip
                assert time.monotonic() < deadline, "the position wait never started"
                await asyncio.sleep(0.01)
        assert (await replica1.status()).replication is not None  # health checks keep working
        assert not waiting.done(), "status() returned only after the position wait ended"
    await waiting


async def test_wait_relay_applied_after_io_thread_stop(replicated_trio: Trio) -> None:
    servers, (primary, replica1, _) = replicated_trio
    await create_table(primary)
    await primary.execute("INSERT INTO app.t VALUES (1, 'x')")
    await replica1.wait_for_position(await primary.primary_position(), 5)
    # A transaction on the replica holds the row, so the SQL thread (running) cannot apply the
    # next update: it stays in the relay log, received but not applied.
    async with MysqlClient(mysql_params_for(servers[1])) as blocker:
        await blocker.execute("BEGIN")
        await blocker.fetch_all("SELECT * FROM app.t WHERE id = 1 FOR UPDATE", retry=False)
        await primary.execute("UPDATE app.t SET v = 'y' WHERE id = 1")
        await primary.execute("INSERT INTO app.t VALUES (2, 'z')")
        position = await primary.primary_position()
        await wait_received(replica1, position)
        assert not (await replication_of(replica1)).applied.contains(position)

        await replica1.stop_io_thread()
        with pytest.raises(WaitTimeoutError) as timed_out:
            await replica1.wait_relay_applied(0.3)
        assert timed_out.value.target == position
        await blocker.execute("ROLLBACK")
    applied = await replica1.wait_relay_applied(5)
    assert applied.contains(position)
    replication = await replica1.replication_status()
    assert replication is not None
    assert replication.io_state == "No" and not replication.io_running
    assert replication.sql_running
    assert await count_rows(replica1) == 2


async def test_wait_relay_applied_fails_fast_when_sql_thread_is_stopped(
    replicated_trio: Trio,
) -> None:
    _, (primary, replica1, _) = replicated_trio
    await replica1.execute("STOP SLAVE SQL_THREAD")
    await create_table(primary)
    position = await primary.primary_position()
    await wait_received(replica1, position)
    await replica1.stop_io_thread()
    started = time.monotonic()
    with pytest.raises(ReplicationError, match="SQL thread stopped"):
        await replica1.wait_relay_applied(5)
    assert time.monotonic() - started < 4, "waited out its 5 s deadline instead of failing"


# -- promotion and repointing -------------------------------------------------------------------


async def test_planned_reparent_steps_move_primary_and_replication(replicated_trio: Trio) -> None:
    servers, (old_primary, elect, other) = replicated_trio
    await create_table(old_primary)
    await old_primary.execute("INSERT INTO app.t VALUES (1, 'old primary')")

    position = await old_primary.demote()
    await elect.wait_for_position(position, 5)
    new_position = await elect.promote(semi_sync=False)
    assert new_position.contains(position)
    entry = await write_journal_entry(elect, "PlannedReparentShard", "zone1-102", new_position)

    new_primary = servers[1]
    await asyncio.gather(
        attach_replica(other, new_primary),
        old_primary.set_replication_source(
            new_primary.host,
            new_primary.port,
            user=new_primary.admin_user,
            password=new_primary.admin_password,
            semi_sync=False,
            from_own_binlog=True,
        ),
    )
    await wait_replicating(old_primary)
    await asyncio.gather(
        wait_for_journal_entry(other, entry.time_created_ns, 5),
        wait_for_journal_entry(old_primary, entry.time_created_ns, 5),
    )

    status = await elect.status()
    assert status.replication is None and status.read_only is False
    async with MysqlClient(app_params_for(new_primary)) as app:
        await app.execute("INSERT INTO app.t VALUES (2, 'new primary')")
    await wait_rows(other, 2)
    await wait_rows(old_primary, 2)

    for client in (old_primary, other):
        status = await client.status()
        assert status.replication is not None
        assert status.replication.source_port == new_primary.port
        assert status.errant.is_empty(), status
        assert status.read_only is True
    assert [e.primary_alias for e in await read_journal(old_primary)] == ["zone1-102"]


async def test_repointing_a_former_primary_without_adopting_its_binlog_shows_errant(
    replicated_trio: Trio,
) -> None:
    # Why from_own_binlog exists: without it, the old primary's own writes are not in its
    # gtid_slave_pos and look like local (errant) transactions.
    servers, (old_primary, elect, _) = replicated_trio
    await create_table(old_primary)
    position = await old_primary.demote()
    await elect.wait_for_position(position, 5)
    await elect.promote(semi_sync=False)
    await old_primary.set_replication_source(
        servers[1].host,
        servers[1].port,
        user=servers[1].admin_user,
        password=servers[1].admin_password,
        semi_sync=False,
        start=False,
    )
    status = await old_primary.status()
    assert status.replication is not None and not status.replication.io_running
    assert status.errant == position


# -- errant transactions ------------------------------------------------------------------------


async def test_direct_write_on_replica_is_reported_errant(replicated_trio: Trio) -> None:
    servers, (primary, replica1, replica2) = replicated_trio
    await create_table(primary)
    await replica1.wait_for_position(await primary.primary_position(), 5)
    # The admin user passes read_only (READ ONLY ADMIN), with sql_log_bin on: an errant write.
    await replica1.execute("INSERT INTO app.t VALUES (99, 'errant')")
    errant = (await replica1.status()).errant
    assert not errant.is_empty()
    assert isinstance(errant, MariadbGtidSet)
    assert [gtid.server_id for gtid in errant.gtids] == [servers[1].server_id]
    assert (await replica2.status()).errant.is_empty()
    assert (await primary.status()).errant.is_empty()


# -- semi-sync ------------------------------------------------------------------------------------


async def test_semi_sync_switches_are_reflected_in_status(replicated_trio: Trio) -> None:
    _, (primary, replica1, _) = replicated_trio
    await primary.set_semi_sync(primary=True, replica=False, timeout_ms=10_000)
    await replica1.set_semi_sync(primary=False, replica=True)
    status = await primary.status()
    assert (status.semi_sync_primary, status.semi_sync_replica) == (True, False)
    status = await replica1.status()
    assert (status.semi_sync_primary, status.semi_sync_replica) == (False, True)
    await wait_replicating(replica1)  # the IO thread was restarted to pick the change up
    # With an acking replica, a commit does not wait out the (10 s) semi-sync timeout.
    started = time.monotonic()
    await create_table(primary)
    assert time.monotonic() - started < 5
    row = await primary.fetch_one("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")
    assert row is not None and int(row["Value"]) == 1

    await primary.set_semi_sync(primary=False, replica=False)
    await replica1.set_semi_sync(primary=False, replica=False)
    status = await primary.status()
    assert (status.semi_sync_primary, status.semi_sync_replica) == (False, False)
    assert not (await replica1.status()).semi_sync_replica


# -- journal ----------------------------------------------------------------------------------


async def test_journal_on_primary_replicates_and_reads_newest_first(replicated_trio: Trio) -> None:
    _, (primary, replica1, replica2) = replicated_trio
    assert await read_journal(primary) == []
    with pytest.raises(WaitTimeoutError, match="did not arrive"):
        await wait_for_journal_entry(replica1, 1, 0.1)  # table missing: not there yet

    first = await write_journal_entry(
        primary, "InitShardPrimary", "zone1-101", await primary.primary_position()
    )
    second = await write_journal_entry(primary, "PlannedReparentShard", "zone1-101", None)
    await asyncio.gather(
        wait_for_journal_entry(replica1, second.time_created_ns, 5),
        wait_for_journal_entry(replica2, second.time_created_ns, 5),
    )
    assert await read_journal(replica1) == [second, first]
    assert await read_journal(primary, limit=1) == [second]
    assert first.replication_position is not None
    assert first.replication_position.startswith("MariaDB/")

    # The IO thread stopped without an error: the row cannot come, but nothing is known to be
    # broken (someone may start it again), so the wait keeps its deadline.
    await replica2.execute("STOP SLAVE IO_THREAD")
    third = await write_journal_entry(primary, "PlannedReparentShard", "zone1-101", None)
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as timed_out:
        await wait_for_journal_entry(replica2, third.time_created_ns, 0.3)
    # Keeps its 0.3 s deadline and does not hang (the overrun is a bench.timeouts figure).
    assert 0.3 <= time.monotonic() - started < 5
    assert timed_out.value.address == replica2.address


# -- failures -------------------------------------------------------------------------------------


async def test_refused_port_is_unreachable_fast() -> None:
    with refused_port() as port:  # held by this test: nobody can be listening there
        # A refused connection is reported at once, not after the (here 30 s) connect timeout.
        client = MysqlClient(MysqlParams("127.0.0.1", port, "orc", "x", connect_timeout=30))
        started = time.monotonic()
        with pytest.raises(MysqlUnreachableError) as refused:
            await client.connect()
        assert time.monotonic() - started < 5
        assert refused.value.address == f"127.0.0.1:{port}"
        with pytest.raises(MysqlUnreachableError):
            await client.status()  # every call, not just connect
        await client.close()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that completes the TCP handshake (backlog) but never speaks MySQL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def test_server_that_never_answers_is_unreachable_within_connect_timeout(
    silent_listener: int,
) -> None:
    client = MysqlClient(
        MysqlParams("127.0.0.1", silent_listener, "orc", "x", connect_timeout=0.5,
                    query_timeout=30)
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(MysqlUnreachableError, match="no answer"):
        await client.status()
    # The connect timeout (0.5 s) applies, not the 30 s query timeout; by how much it is
    # overrun is a figure of `python -m bench.timeouts`.
    assert 0.45 < time.monotonic() - started < 5
    await client.close()


async def test_slow_query_times_out_and_client_recovers(
    mariadb_factory: MariadbFactory,
) -> None:
    (server,) = await mariadb_factory(1)
    async with MysqlClient(mysql_params_for(server, query_timeout=0.5)) as client:
        started = time.monotonic()
        with pytest.raises(MysqlTimeoutError) as timed_out:
            await client.fetch_all("SELECT SLEEP(30)")
        # Its 0.5 s timeout, not the statement's 30 s (overrun: a bench.timeouts figure).
        assert 0.5 <= time.monotonic() - started < 5
        assert timed_out.value.address == server.address
        assert await client.fetch_one("SELECT 1 AS one") == {"one": 1}
        # The abandoned statement was killed on the server, not left running.
        deadline = time.monotonic() + 2
        while await client.fetch_all(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(3)'"
        ):
            assert time.monotonic() < deadline, "SLEEP(3) still running"
            await asyncio.sleep(0.02)
        # A per-call timeout overrides the default.
        assert await client.fetch_one("SELECT SLEEP(0.7) AS s", timeout=2) == {"s": 0}


async def test_cancelled_call_leaves_client_usable(mariadb_factory: MariadbFactory) -> None:
    (server,) = await mariadb_factory(1)
    async with MysqlClient(mysql_params_for(server)) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.fetch_all("SELECT SLEEP(2)")
        assert await client.fetch_one("SELECT 1 AS one") == {"one": 1}


async def test_reads_reconnect_transparently_after_server_restart(
    mariadb_factory: MariadbFactory,
) -> None:
    (server,) = await mariadb_factory(1)
    async with MysqlClient(mysql_params_for(server)) as client:
        await client.status()
        await server.stop()
        with pytest.raises(MysqlUnreachableError):
            await client.status()
        await server.start_again()
        await client.status()  # reconnected on its own
        server.kill()
        await server.start_again()
        assert (await client.status()).server_id == server.server_id  # stale conn, retried


async def test_bad_credentials_are_a_server_error_not_unreachable(
    mariadb_factory: MariadbFactory,
) -> None:
    (server,) = await mariadb_factory(1)
    client = MysqlClient(MysqlParams(server.host, server.port, "orc", "wrong"))
    with pytest.raises(MysqlServerError) as denied:
        await client.connect()
    assert denied.value.code == 1045


async def test_replication_to_unknown_source_reports_io_error(
    mariadb_factory: MariadbFactory,
) -> None:
    (server,) = await mariadb_factory(1)
    async with MysqlClient(mysql_params_for(server)) as client:
        with refused_port() as port:  # held by this test: no server can be there
            await client.set_replication_source(
                "127.0.0.1", port, user="orc", password="x", semi_sync=False
            )
            deadline = time.monotonic() + 5
            while not (replication := await replication_of(client)).last_io_error:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert not replication.io_running
        with pytest.raises(ValueError):
            await client.set_replication_source(
                "bad host", 3306, user="orc", password="x", semi_sync=False
            )
        await client.reset_replication()
        assert await client.replication_status() is None


# -- the launcher -------------------------------------------------------------------------------


async def test_acknowledged_writes_survive_sigkill(mariadb_factory: MariadbFactory) -> None:
    (server,) = await mariadb_factory(1)
    async with MysqlClient(mysql_params_for(server)) as client:
        await create_table(client)
        await client.execute("INSERT INTO app.t VALUES (1, 'durable')")
        server.kill()
        assert not server.is_running()
        await server.start_again()
        assert await count_rows(client) == 1


async def test_launcher_state_round_trips_and_fresh_servers_have_empty_gtid_state(
    mariadb_factory: MariadbFactory,
) -> None:
    servers = await mariadb_factory(2)
    assert len({s.port for s in servers}) == 2
    clone = MariadbServer.from_json(servers[0].to_json())
    assert clone.to_json() == servers[0].to_json()
    assert clone.is_running()  # found by pid, without the process handle
    for server in servers:
        async with MysqlClient(mysql_params_for(server)) as client:
            status = await client.status()
            assert status.position.is_empty()
            assert status.server_id == server.server_id
            grants = await client.fetch_all(f"SHOW GRANTS FOR '{server.app_user}'@'%'")
        text = " ".join(str(v) for row in grants for v in row.values())
        assert (
            "SUPER" not in text and "READ ONLY ADMIN" not in text and "ALL PRIVILEGES" not in text
        )
    await clone.stop()
    assert not servers[0].is_running()
    with contextlib.suppress(ProcessLookupError):
        servers[0].kill()  # already gone: a no-op


async def test_start_moves_to_another_port_when_the_chosen_one_is_taken(
    mariadb_factory: MariadbFactory,
    monkeypatch: pytest.MonkeyPatch,
    silent_listener: int,
) -> None:
    from orchestrator.local import mariadb as launcher

    ports = iter([silent_listener, free_port()])
    monkeypatch.setattr(launcher, "free_port", lambda: next(ports))
    (server,) = await mariadb_factory(1)
    assert server.port != silent_listener
    # With an explicit port there is no second try: the error says why, without delay.
    started = time.monotonic()
    with pytest.raises(launcher.MariadbStartError, match="Address already in use"):
        await mariadb_factory(1, port=silent_listener)
    assert time.monotonic() - started < 1.5
