"""Fixtures that start real etcd servers with our launcher and give tests a topology store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orchestrator.local.etcd import EtcdServer, start_etcd
from topo.store import TopoStore


@pytest.fixture(scope="session")
def etcd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("etcd")


@pytest.fixture(scope="session")
def etcd_server(etcd_dir: Path) -> Iterator[EtcdServer]:
    """One etcd member for the whole session; tests isolate themselves by key root.

    Started from a short-lived event loop: the server is a plain process, not tied to any loop.
    """
    (server,) = asyncio.run(start_etcd(etcd_dir))
    yield server
    server.kill()


@pytest.fixture
async def topo(etcd_server: EtcdServer) -> AsyncIterator[TopoStore]:
    """A store under a fresh root, so tests never see each other's keys."""
    store = TopoStore([etcd_server.endpoint], root=f"/t-{uuid.uuid4().hex[:10]}")
    yield store
    await store.close()


@pytest.fixture
def topo_factory(etcd_server: EtcdServer):  # type: ignore[no-untyped-def]
    """More stores on the same root (other orchestrator instances, other lock holders)."""
    made: list[TopoStore] = []

    def make(root: str, **kwargs: object) -> TopoStore:
        s = TopoStore([etcd_server.endpoint], root=root, **kwargs)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    # Closed by the event loop teardown of each test; close explicitly where it matters.
