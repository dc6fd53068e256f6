"""What every workflow runs with: the topology store, MySQL credentials and connections, the
settings that gate active reparents, and the fault points.

The orchestrator service builds one `WorkflowEnv` from its settings; a test builds one directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mysqlctl.client import MysqlClient, MysqlParams
from topo.records import Tablet
from topo.store import TopoStore
from workflows.faults import FaultPoints

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class MysqlCredentials:
    """The orchestrator's MySQL account (also used as the replication account).

    Kept out of etcd: it comes from settings (environment or a file)."""

    user: str
    password: str
    connect_timeout: float = 1.0
    query_timeout: float = 5.0

    def __repr__(self) -> str:
        return f"MysqlCredentials(user={self.user!r}, password=***)"


@dataclass
class WorkflowSettings:
    """Switches that change what workflows may do."""

    # PRS, ERS and InitShardPrimary are refused (an external tool owns failover); TER still works.
    disable_active_reparents: bool = False
    lock_timeout: float = 30.0
    # Per-tablet deadline for the status probes of ERS and health checks.
    probe_timeout: float = 2.0


class ClientPool:
    """One open MysqlClient per server, reused across workflows (a fresh connection per call
    would add a handshake to every step of the PRS window)."""

    def __init__(self, creds: MysqlCredentials) -> None:
        self.creds = creds
        self._clients: dict[tuple[str, int], MysqlClient] = {}
        self._lock = asyncio.Lock()

    def params(self, host: str, port: int, *, query_timeout: float | None = None) -> MysqlParams:
        return MysqlParams(
            host=host,
            port=port,
            user=self.creds.user,
            password=self.creds.password,
            connect_timeout=self.creds.connect_timeout,
            query_timeout=query_timeout or self.creds.query_timeout,
        )

    def get(self, tablet: Tablet) -> MysqlClient:
        key = (tablet.mysql_host, tablet.mysql_port)
        client = self._clients.get(key)
        if client is None:
            client = MysqlClient(self.params(*key))
            self._clients[key] = client
        return client

    async def drop(self, tablet: Tablet) -> None:
        """Forget a connection (after a failure, so the next call reconnects cleanly)."""
        client = self._clients.pop((tablet.mysql_host, tablet.mysql_port), None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()


@dataclass
class WorkflowEnv:
    store: TopoStore
    creds: MysqlCredentials
    settings: WorkflowSettings = field(default_factory=WorkflowSettings)
    faults: FaultPoints = field(default_factory=FaultPoints)
    # When a tablet last answered a health check (epoch seconds), if a health checker runs
    # next to the workflows (the service sets it); ERS reports its window from there.
    last_healthy: Callable[[str], float | None] | None = None
    clients: ClientPool = field(init=False)

    def __post_init__(self) -> None:
        self.clients = ClientPool(self.creds)

    def mysql(self, tablet: Tablet) -> MysqlClient:
        return self.clients.get(tablet)

    async def close(self) -> None:
        await self.clients.close()
