"""Fixtures that start real MariaDB servers with our launcher (``orchestrator.local.mariadb``).

A server takes about 0.1 s to start (its datadir is a copy of a cached template), so tests get
fresh servers of their own rather than sharing state. Every server a test started is killed at
teardown, whatever the test's outcome, and its datadir removed (the error log stays in the test's
``tmp_path`` for post-mortems).

* ``mariadb_factory``: ``servers = await mariadb_factory(3)`` starts servers in parallel.
* ``replicated_trio``: server 0 a writable primary, servers 1 and 2 read-only replicas of it;
  yields ``(servers, clients)``.
* ``mysql_params_for(server)`` / ``app_params_for(server)``: connection parameters for the
  admin user (everything) or the application user (data only, fenced by ``read_only``).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from mysqlctl.client import MysqlClient, MysqlParams
from orchestrator.local.mariadb import MariadbServer, start_mariadb

MariadbFactory = Callable[..., Awaitable[list[MariadbServer]]]

FIRST_SERVER_ID = 101


def mysql_params_for(server: MariadbServer, **overrides: Any) -> MysqlParams:
    """Admin connection parameters (the orchestrator's own user); ``overrides`` for timeouts."""
    params: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.admin_user,
        "password": server.admin_password,
    }
    params.update(overrides)
    return MysqlParams(**params)


def app_params_for(server: MariadbServer, **overrides: Any) -> MysqlParams:
    """Application-user parameters: no SUPER / READ ONLY ADMIN, so read-only refuses it."""
    params: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.app_user,
        "password": server.app_password,
    }
    params.update(overrides)
    return MysqlParams(**params)


async def wait_replicating(client: MysqlClient, timeout: float = 10.0) -> None:
    """Until both replication threads run (the IO thread has connected to its source)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        replication = await client.replication_status()
        if replication is not None and replication.io_running and replication.sql_running:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{client.address} not replicating: {replication}")
        await asyncio.sleep(0.01)


async def attach_replica(
    replica: MysqlClient, primary: MariadbServer, *, semi_sync: bool = False
) -> None:
    """Point ``replica`` at ``primary``, make it read-only, wait until it replicates."""
    await replica.set_replication_source(
        primary.host,
        primary.port,
        user=primary.admin_user,
        password=primary.admin_password,
        semi_sync=semi_sync,
    )
    await replica.set_read_only(True)
    await wait_replicating(replica)


@pytest.fixture
async def mariadb_factory(tmp_path: Path) -> AsyncIterator[MariadbFactory]:
    """``await mariadb_factory(n=1, **start_options)`` -> ``n`` fresh servers started in
    parallel, server ids 101, 102, ... in the order of the list (unique within the test)."""
    started: list[MariadbServer] = []
    ids = itertools.count(FIRST_SERVER_ID)

    async def factory(n: int = 1, **options: Any) -> list[MariadbServer]:
        server_ids = [next(ids) for _ in range(n)]
        results = await asyncio.gather(
            *(
                start_mariadb(tmp_path / f"mariadb-{sid}", server_id=sid, **options)
                for sid in server_ids
            ),
            return_exceptions=True,
        )
        servers = [r for r in results if isinstance(r, MariadbServer)]
        started.extend(servers)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return servers

    try:
        yield factory
    finally:
        for server in started:
            server.kill()
            shutil.rmtree(server.datadir, ignore_errors=True)


class Trio(NamedTuple):
    servers: list[MariadbServer]
    clients: list[MysqlClient]


@pytest.fixture
async def replicated_trio(mariadb_factory: MariadbFactory) -> AsyncIterator[Trio]:
    """Three servers: 0 is the writable primary, 1 and 2 are read-only replicas of it, both
    replicating when the test starts. Clients use the admin user and are closed at teardown."""
    servers = await mariadb_factory(3)
    clients = [MysqlClient(mysql_params_for(server)) for server in servers]
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        await asyncio.gather(*(attach_replica(client, servers[0]) for client in clients[1:]))
        yield Trio(servers, clients)
    finally:
        await asyncio.gather(*(client.close() for client in clients))
