"""The local cluster: etcd, N MariaDB servers per shard and (optionally) the orchestrator
service, all on loopback, no Docker, state in one directory.

`up` records every process in `<dir>/cluster.json` as soon as it starts, so `down` stops exactly
what `up` started, even after a partial start-up. The test suite uses the same launcher (with
an etcd it already runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.local.etcd import EtcdServer, pid_alive, start_etcd, terminate
from orchestrator.local.mariadb import MariadbServer, start_mariadb
from orchestrator.local.ports import free_port
from topo.alias import check_cell, check_keyspace, shard_names
from topo.errors import InvalidArgumentError
from topo.records import Durability, Keyspace, Shard, Tablet, TabletType
from topo.store import TopoStore
from workflows.env import MysqlCredentials, WorkflowEnv
from workflows.init_shard_primary import InitShardPrimaryOptions, init_shard_primary

STATE_FILE = "cluster.json"


@dataclass(frozen=True)
class ClusterSpec:
    keyspace: str = "commerce"
    shards: int = 1
    tablets_per_shard: int = 3
    cells: tuple[str, ...] = ("zone1",)
    durability: Durability = Durability.NONE
    service: bool = True
    root: str = "/vt"

    def __post_init__(self) -> None:
        check_keyspace(self.keyspace)
        for c in self.cells:
            check_cell(c)
        if not 1 <= self.tablets_per_shard <= 50:
            raise InvalidArgumentError("tablets per shard must be between 1 and 50")
        shard_names(self.shards)


@dataclass
class TabletProcess:
    alias: str
    cell: str
    shard: str
    server: MariadbServer

    def to_json(self) -> dict[str, Any]:
        return {"alias": self.alias, "cell": self.cell, "shard": self.shard,
                "server": self.server.to_json()}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TabletProcess:
        return cls(d["alias"], d["cell"], d["shard"], MariadbServer.from_json(d["server"]))


@dataclass
class ClusterState:
    dir: Path
    spec: ClusterSpec
    etcd: list[EtcdServer] = field(default_factory=list)
    external_etcd: list[str] = field(default_factory=list)
    tablets: list[TabletProcess] = field(default_factory=list)
    service_pid: int = 0
    api_url: str | None = None

    @property
    def etcd_endpoints(self) -> list[str]:
        return self.external_etcd or [e.endpoint for e in self.etcd]

    def tablet(self, alias: str) -> TabletProcess:
        return next(t for t in self.tablets if t.alias == alias)

    def save(self) -> None:
        doc = {
            "spec": {**vars(self.spec), "cells": list(self.spec.cells),
                     "durability": self.spec.durability.value},
            "etcd": [e.to_json() for e in self.etcd],
            "external_etcd": self.external_etcd,
            "tablets": [t.to_json() for t in self.tablets],
            "service_pid": self.service_pid,
            "api_url": self.api_url,
        }  # fmt: skip
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.dir / STATE_FILE)

    @classmethod
    def load(cls, dir: Path) -> ClusterState:
        path = dir / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no local cluster in {dir} ({STATE_FILE} not found)")
        doc = json.loads(path.read_text())
        spec_d = doc["spec"]
        spec = ClusterSpec(**{**spec_d, "cells": tuple(spec_d["cells"]),
                              "durability": Durability(spec_d["durability"])})  # fmt: skip
        return cls(
            dir=dir,
            spec=spec,
            etcd=[EtcdServer.from_json(e) for e in doc["etcd"]],
            external_etcd=doc.get("external_etcd", []),
            tablets=[TabletProcess.from_json(t) for t in doc["tablets"]],
            service_pid=doc.get("service_pid", 0),
            api_url=doc.get("api_url"),
        )

    def credentials(self) -> MysqlCredentials:
        s = self.tablets[0].server
        return MysqlCredentials(user=s.admin_user, password=s.admin_password)

    def store(self, **kwargs: Any) -> TopoStore:
        return TopoStore(self.etcd_endpoints, root=self.spec.root, **kwargs)


def tablet_layout(spec: ClusterSpec) -> list[tuple[str, str, str, int]]:
    """(alias, cell, shard, uid) for every tablet: uids 101, 102... for the first shard, 201...
    for the second; tablets spread over the cells round-robin."""
    out = []
    for i, shard in enumerate(shard_names(spec.shards)):
        for j in range(spec.tablets_per_shard):
            cell = spec.cells[j % len(spec.cells)]
            uid = 100 * (i + 1) + j + 1
            out.append((f"{cell}-{uid}", cell, shard, uid))
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def up(
    dir: Path, spec: ClusterSpec, *, etcd_endpoints: Sequence[str] | None = None
) -> ClusterState:
    """Start everything, register the topology, run InitShardPrimary on every shard, and start
    the service if asked. On failure, whatever was started is stopped again."""
    dir = dir.absolute()
    if (dir / STATE_FILE).exists():
        raise FileExistsError(f"a local cluster already lives in {dir}: run `local down` first")
    dir.mkdir(parents=True, exist_ok=True)
    state = ClusterState(dir=dir, spec=spec, external_etcd=list(etcd_endpoints or []))
    try:
        await _start_processes(state)
        await _register_and_init(state)
        if spec.service:
            await start_service(state)
    except BaseException:
        log("start-up failed; stopping what was started")
        await down(dir)
        raise
    return state


async def _start_processes(state: ClusterState) -> None:
    t0 = time.monotonic()
    if not state.external_etcd:
        state.etcd = await start_etcd(state.dir / "etcd")
        state.save()
        log(f"etcd up at {state.etcd_endpoints[0]} ({time.monotonic() - t0:.2f}s)")
    layout = tablet_layout(state.spec)
    # Every server starts read-only, also after a crash and restart: only the orchestrator
    # makes a primary writable, so a dead primary coming back never takes writes on its own.
    results = await asyncio.gather(
        *(start_mariadb(state.dir / alias, server_id=uid, name=alias,
                        extra_options={"read-only": "ON"})
          for alias, _cell, _shard, uid in layout),
        return_exceptions=True,
    )  # fmt: skip
    for (alias, cell, shard, _uid), r in zip(layout, results, strict=True):
        if isinstance(r, MariadbServer):
            state.tablets.append(TabletProcess(alias, cell, shard, r))
    state.save()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    log(f"{len(state.tablets)} MariaDB servers up ({time.monotonic() - t0:.2f}s)")


async def _register_and_init(state: ClusterState) -> None:
    spec = state.spec
    store = state.store()
    env = WorkflowEnv(store, state.credentials())
    try:
        await store.create_keyspace(Keyspace(name=spec.keyspace, durability_policy=spec.durability))
        for shard in shard_names(spec.shards):
            await store.create_shard(Shard(keyspace=spec.keyspace, name=shard))
        for t in state.tablets:
            await store.create_tablet(
                Tablet(alias=t.alias, keyspace=spec.keyspace, shard=t.shard,
                       type=TabletType.REPLICA, mysql_host=t.server.host,
                       mysql_port=t.server.port, hostname="localhost")
            )  # fmt: skip
        for shard in shard_names(spec.shards):
            first = next(t for t in state.tablets if t.shard == shard)
            r = await init_shard_primary(
                env, InitShardPrimaryOptions(spec.keyspace, shard, first.alias)
            )
            log(f"InitShardPrimary {spec.keyspace}/{shard}: {r.new_primary} ({r.duration_ms} ms)")
    finally:
        await env.close()
        await store.close()


async def start_service(state: ClusterState) -> None:
    """Run `orchestrator serve` for this cluster in the background, logs in the state dir."""
    port = free_port()
    creds = state.credentials()
    env = {**os.environ, "ORC_MYSQL_USER": creds.user, "ORC_MYSQL_PASSWORD": creds.password}
    args = [sys.executable, "-m", "orchestrator", "serve",
            "--etcd", ",".join(state.etcd_endpoints), "--root", state.spec.root,
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    with open(state.dir / "orchestrator.log", "ab") as logf:
        proc = subprocess.Popen(
            args, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    state.service_pid = proc.pid
    state.api_url = f"http://127.0.0.1:{port}"
    state.save()
    await _wait_http(state.api_url + "/readyz", proc, state.dir / "orchestrator.log")
    log(f"orchestrator service at {state.api_url}")


async def _wait_http(url: str, proc: subprocess.Popen[bytes], logfile: Path) -> None:
    import aiohttp

    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"orchestrator serve exited: {logfile.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"orchestrator serve not ready after 30s: {logfile.read_text()[-2000:]}")


async def down(dir: Path) -> list[str]:
    """Stop everything `up` recorded in `dir`; returns what was stopped. Data stays unless
    the caller removes the directory."""
    state = ClusterState.load(dir.absolute())
    stopped = []
    if state.service_pid and pid_alive(state.service_pid):
        await terminate(state.service_pid, 10)
        stopped.append(f"orchestrator (pid {state.service_pid})")
    await asyncio.gather(*(t.server.stop() for t in state.tablets))
    for t in state.tablets:
        if t.server.is_running():
            t.server.kill()
        stopped.append(f"{t.alias} mariadbd (pid {t.server.pid})")
    for e in state.etcd:
        if e.is_running():
            stopped.append(f"{e.name} (pid {e.pid})")
            await e.stop()
    (state.dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def destroy(dir: Path) -> None:
    """Remove the cluster directory (after `down`)."""
    shutil.rmtree(dir, ignore_errors=True)


async def describe(state: ClusterState) -> dict[str, Any]:
    """The cluster document of the `local up` contract, with live types and primaries."""
    store = state.store(op_timeout=3.0)
    try:
        shards = await store.list_shards(state.spec.keyspace)
        tablets = {t.alias: t for t in await store.list_tablets(keyspace=state.spec.keyspace)}
    finally:
        await store.close()
    creds = state.credentials()
    return {
        "dir": str(state.dir),
        "etcd_endpoints": state.etcd_endpoints,
        "api_url": state.api_url,
        "keyspace": state.spec.keyspace,
        "shards": [{"name": s.name, "primary": s.primary_alias} for s in shards],
        "mysql_user": creds.user,
        "mysql_password": creds.password,
        "tablets": [
            {
                "alias": t.alias,
                "cell": t.cell,
                "shard": t.shard,
                "type": tablets[t.alias].type.value if t.alias in tablets else None,
                "mysql_host": t.server.host,
                "mysql_port": t.server.port,
                "mysqld_pid": t.server.pid if t.server.is_running() else None,
            }
            for t in state.tablets
        ],
    }


async def status_rows(state: ClusterState) -> list[dict[str, Any]]:
    """One row per tablet: role, read_only, replicating from, GTID position, lag."""
    from workflows.replication import shard_replication_positions

    store = state.store(op_timeout=3.0)
    env = WorkflowEnv(store, state.credentials())
    rows: list[dict[str, Any]] = []
    try:
        for shard in shard_names(state.spec.shards):
            for r in await shard_replication_positions(env, state.spec.keyspace, shard):
                rows.append({"shard": shard, **r.to_dict()})
    finally:
        await env.close()
        await store.close()
    return rows
