"""The local cluster: etcd, N MariaDB servers per shard, (optionally) the orchestrator service
and a migration target server, all on loopback, no Docker, state in one directory.

`up` records every component in `<dir>/cluster.json` as soon as it starts. `down` stops what
runs now, found from each server's pid file or command line and the service's environment
(`orchestrator.local.procs`), not from the pids recorded at `up`: a drill, a test or a benchmark
may have restarted a server since. Then it sweeps any other mariadbd or etcd process still using
the directory. `down` keeps the data and `cluster.json`; `up` on a stopped cluster starts it
again from its data (same ports), and `down --purge` removes the directory. `stop|kill|restart`
act on one tablet, the service or the target, for drills. The test suite uses the same launcher
(with an etcd it already runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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

from orchestrator.local import procs
from orchestrator.local.etcd import EtcdServer, start_etcd
from orchestrator.local.mariadb import MariadbServer, start_mariadb
from orchestrator.local.ports import free_port
from topo.alias import check_cell, check_keyspace, shard_names
from topo.errors import InvalidArgumentError
from topo.records import Durability, Keyspace, Shard, Tablet, TabletType
from topo.store import TopoStore
from workflows.env import MysqlCredentials, WorkflowEnv
from workflows.init_shard_primary import InitShardPrimaryOptions, init_shard_primary

STATE_FILE = "cluster.json"
SERVICE_LOG = "orchestrator.log"
TARGET_NAME = "target"
# The migration target's server_id: apart from every tablet's (their uids are 101, 102, ...).
TARGET_SERVER_ID = 9000


@dataclass(frozen=True)
class ClusterSpec:
    keyspace: str = "commerce"
    shards: int = 1
    tablets_per_shard: int = 3
    cells: tuple[str, ...] = ("zone1",)
    durability: Durability = Durability.NONE
    service: bool = True
    root: str = "/vt"
    # One more MariaDB server, writable, not a tablet: the downstream of migration tasks.
    target: bool = False
    # Migration workers of their own (`orchestrator worker`); 0: the service's in-process one.
    workers: int = 0

    def __post_init__(self) -> None:
        check_keyspace(self.keyspace)
        for c in self.cells:
            check_cell(c)
        if not 1 <= self.tablets_per_shard <= 50:
            raise InvalidArgumentError("tablets per shard must be between 1 and 50")
        if not 0 <= self.workers <= 20:
            raise InvalidArgumentError("workers must be between 0 and 20")
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
    target: MariadbServer | None = None

    @property
    def etcd_endpoints(self) -> list[str]:
        return self.external_etcd or [e.endpoint for e in self.etcd]

    def tablet(self, alias: str) -> TabletProcess:
        for t in self.tablets:
            if t.alias == alias:
                return t
        raise KeyError(
            f"no tablet {alias!r} in the local cluster in {self.dir}; tablets: "
            + ", ".join(t.alias for t in self.tablets)
        )

    def servers(self) -> list[MariadbServer]:
        """Every MariaDB server of the cluster: the tablets', then the target."""
        return [t.server for t in self.tablets] + ([self.target] if self.target else [])

    def service_procs(self) -> list[procs.Proc]:
        """The orchestrator service(s) of this cluster running now (found by the directory
        in their environment, so one restarted elsewhere is found too)."""
        d = str(self.dir)
        return [
            p for p in procs.processes()
            if "serve" in p.argv and procs.environ_of(p.pid).get(procs.LOCAL_DIR_ENV) == d
        ]  # fmt: skip

    def worker_procs(self) -> list[procs.Proc]:
        """The cluster's own migration worker processes running now (`up --workers N`)."""
        d = str(self.dir)
        return [
            p for p in procs.processes()
            if "worker" in p.argv and procs.environ_of(p.pid).get(procs.LOCAL_DIR_ENV) == d
        ]  # fmt: skip

    def running(self) -> list[str]:
        """What runs now, as `name (pid N)` strings (empty when the cluster is stopped)."""
        out = [f"orchestrator service (pid {p.pid})" for p in self.service_procs()]
        out += [f"migration worker (pid {p.pid})" for p in self.worker_procs()]
        for srv in self.servers():
            if srv.refresh():
                out.append(f"{srv.name} mariadbd (pid {srv.pid})")
        for e in self.etcd:
            if e.refresh():
                out.append(f"{e.name} (pid {e.pid})")
        return out

    def save(self) -> None:
        doc = {
            "spec": {**vars(self.spec), "cells": list(self.spec.cells),
                     "durability": self.spec.durability.value},
            "etcd": [e.to_json() for e in self.etcd],
            "external_etcd": self.external_etcd,
            "tablets": [t.to_json() for t in self.tablets],
            "service_pid": self.service_pid,
            "api_url": self.api_url,
            "target": self.target.to_json() if self.target else None,
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
            target=MariadbServer.from_json(doc["target"]) if doc.get("target") else None,
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
    the service if asked. On failure, whatever was started is stopped again.

    A cluster stopped by `down` in `dir` is started again from its data instead (`resume`)."""
    dir = dir.absolute()
    if (dir / STATE_FILE).exists():
        return await resume(dir, spec)
    dir.mkdir(parents=True, exist_ok=True)
    state = ClusterState(dir=dir, spec=spec, external_etcd=list(etcd_endpoints or []))
    try:
        await _start_processes(state)
        await _register_and_init(state)
        if spec.service:
            await start_service(state)
        await start_workers(state)
    except BaseException:
        log("start-up failed; stopping what was started")
        await down(dir)
        _forget(state)
        raise
    return state


async def resume(dir: Path, spec: ClusterSpec) -> ClusterState:
    """Start a stopped cluster again from its data: etcd, every server on its old port, then
    InitShardPrimary (forced) on each shard's recorded primary, which holds every transaction
    (servers restart read-only and not replicating), then the service if `spec.service`."""
    state = ClusterState.load(dir)
    running = state.running()
    if running:
        raise FileExistsError(
            f"a local cluster already lives in {dir} and runs ({', '.join(running)}): run "
            "`local down` first, or `local restart` for one of its servers"
        )
    if dataclasses.replace(spec, service=True) != dataclasses.replace(state.spec, service=True):
        raise FileExistsError(
            f"a stopped local cluster with other options lives in {dir} ({state.spec}): run "
            "`local up` with its options to start it again, or `local down --purge` first"
        )
    state.spec = spec
    t0 = time.monotonic()
    log(f"starting the stopped cluster in {dir} again")
    try:
        for e in state.etcd:
            await e.start_again()
        results = await asyncio.gather(
            *(srv.start_again() for srv in state.servers()), return_exceptions=True
        )
        state.save()
        for r in results:
            if isinstance(r, BaseException):
                raise r
        log(f"{len(results)} MariaDB servers up again ({time.monotonic() - t0:.2f}s)")
        await _reinit(state)
        if spec.service:
            await start_service(state, port=_old_port(state.api_url))
        await start_workers(state)
    except BaseException:
        log("start-up failed; stopping what was started")
        await down(dir)
        raise
    return state


def _old_port(url: str | None) -> int | None:
    """The service's previous port, if it is free now (so its URL stays the same)."""
    if not url:
        return None
    import socket

    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the service binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


async def _reinit(state: ClusterState) -> None:
    """After a restart every server is read-only and replicates from nobody: InitShardPrimary
    (forced) on each shard's primary makes it writable and points the others at it."""
    store = state.store()
    env = WorkflowEnv(store, state.credentials())
    try:
        for shard in shard_names(state.spec.shards):
            rec = await store.get_shard(state.spec.keyspace, shard)
            first = next(t for t in state.tablets if t.shard == shard)
            primary = rec.primary_alias or first.alias
            r = await init_shard_primary(
                env, InitShardPrimaryOptions(state.spec.keyspace, shard, primary, force=True)
            )
            log(f"InitShardPrimary {state.spec.keyspace}/{shard}: {r.new_primary} "
                f"({r.duration_ms} ms)")  # fmt: skip
    finally:
        await env.close()
        await store.close()


def _forget(state: ClusterState) -> None:
    """After a failed first start: remove the state file and the servers' directories, so that
    the next `up` starts afresh (the logs of the service stay)."""
    (state.dir / STATE_FILE).unlink(missing_ok=True)
    for srv in state.servers():
        shutil.rmtree(srv.base_dir, ignore_errors=True)
    for alias, *_ in tablet_layout(state.spec):
        shutil.rmtree(state.dir / alias, ignore_errors=True)
    shutil.rmtree(state.dir / TARGET_NAME, ignore_errors=True)
    if not state.external_etcd:
        shutil.rmtree(state.dir / "etcd", ignore_errors=True)


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
    if state.spec.target:
        # Same launcher and credentials as the tablets, but writable (a migration writes to it)
        # and in no topology.
        state.target = await start_mariadb(
            state.dir / TARGET_NAME, server_id=TARGET_SERVER_ID, name=TARGET_NAME
        )
        state.save()
        log(f"migration target up at {state.target.address}")


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


async def start_service(state: ClusterState, port: int | None = None) -> None:
    """Run `orchestrator serve` for this cluster in the background, logs in the state dir."""
    port = port or free_port()
    creds = state.credentials()
    env = {**os.environ, "ORC_MYSQL_USER": creds.user, "ORC_MYSQL_PASSWORD": creds.password,
           procs.LOCAL_DIR_ENV: str(state.dir)}  # fmt: skip
    if state.spec.workers:  # worker processes of their own run the migration subtasks
        env["ORC_WORKER_ENABLED"] = "false"
    args = [sys.executable, "-m", "orchestrator", "serve",
            "--etcd", ",".join(state.etcd_endpoints), "--root", state.spec.root,
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    with open(state.dir / SERVICE_LOG, "ab") as logf:
        proc = subprocess.Popen(
            args, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    state.service_pid = proc.pid
    state.api_url = f"http://127.0.0.1:{port}"
    state.save()
    await _wait_http(state.api_url + "/readyz", proc, state.dir / SERVICE_LOG)
    log(f"orchestrator service at {state.api_url}")


async def start_workers(state: ClusterState) -> None:
    """`orchestrator worker --name wN` for N = 1..spec.workers, logs in the state dir."""
    creds = state.credentials()
    env = {**os.environ, "ORC_MYSQL_USER": creds.user, "ORC_MYSQL_PASSWORD": creds.password,
           procs.LOCAL_DIR_ENV: str(state.dir)}  # fmt: skip
    for i in range(1, state.spec.workers + 1):
        args = [sys.executable, "-m", "orchestrator", "worker", "--name", f"w{i}",
                "--etcd", ",".join(state.etcd_endpoints), "--root", state.spec.root]  # fmt: skip
        with open(state.dir / f"worker-w{i}.log", "ab") as logf:
            proc = subprocess.Popen(
                args, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
        log(f"migration worker w{i} started (pid {proc.pid})")


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
    """Stop what runs now in the cluster in `dir` (whatever started it, and whatever its pid
    is now); return what was stopped. The data and `cluster.json` stay (`up` starts the
    cluster again from them); `destroy` removes the directory."""
    dir = dir.absolute()
    stopped: list[str] = []
    state = ClusterState.load(dir) if (dir / STATE_FILE).exists() else None
    if state is None and not dir.exists():
        raise FileNotFoundError(f"no local cluster in {dir} ({STATE_FILE} not found)")
    if state is not None:
        workers = state.worker_procs()
        await procs.stop_pids([p.pid for p in workers], 10)
        stopped += [f"migration worker (pid {p.pid})" for p in workers]
        services = state.service_procs()
        await procs.stop_pids([p.pid for p in services], 10)
        stopped += [f"orchestrator service (pid {p.pid})" for p in services]
        servers = [srv for srv in state.servers() if srv.refresh()]
        await asyncio.gather(*(srv.stop() for srv in servers))
        for srv in servers:
            srv.kill()  # if it outlived its stop timeout
            stopped.append(f"{srv.name} mariadbd (pid {srv.pid})")
        for e in state.etcd:
            if e.refresh():
                stopped.append(f"{e.name} (pid {e.pid})")
                await e.stop()
        state.service_pid = 0
        state.save()
    # Anything else still using the directory: a server from a start-up that never got into
    # cluster.json, or one whose directory was renamed under it.
    strays = [
        p for p in procs.using_dir(dir)
        if p.name in ("mariadbd", "mysqld", "etcd") or procs.LOCAL_DIR_ENV in
        procs.environ_of(p.pid)
    ]  # fmt: skip
    await procs.stop_pids([p.pid for p in strays], 10)
    stopped += [f"{p.describe()}, not recorded in {STATE_FILE}" for p in strays]
    return stopped


# -- drills: one server or the service ------------------------------------------------------


async def stop_server(srv: MariadbServer, *, kill: bool = False) -> str:
    """Stop (SIGTERM, clean shutdown) or kill (SIGKILL, as a crash) one server running now."""
    if not srv.refresh():
        return f"{srv.name} mariadbd was not running"
    pid = srv.pid
    if kill:
        srv.kill()
        return f"killed {srv.name} mariadbd (pid {pid})"
    await srv.stop()
    return f"stopped {srv.name} mariadbd (pid {pid})"


async def restart_server(state: ClusterState, srv: MariadbServer) -> str:
    """Stop the server if it runs, start it again on its datadir and port (read-only and not
    replicating, as after any restart: the health checks bring a tablet back)."""
    was = f" (was pid {srv.pid})" if srv.refresh() else " (was not running)"
    await srv.stop()
    await srv.start_again()
    state.save()
    return f"started {srv.name} mariadbd again: pid {srv.pid}{was}"


async def stop_service(state: ClusterState, *, kill: bool = False) -> str:
    found = state.service_procs()
    if not found:
        return "the orchestrator service was not running"
    await procs.stop_pids([p.pid for p in found], 10, kill=kill)
    what = ", ".join(str(p.pid) for p in found)
    return f"{'killed' if kill else 'stopped'} the orchestrator service (pid {what})"


async def restart_service(state: ClusterState) -> str:
    """Stop the service if it runs and start it again, on the same port when it had one."""
    was = await stop_service(state)
    await start_service(state, port=_old_port(state.api_url))
    return f"started the orchestrator service again: pid {state.service_pid} ({was})"


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
    target = state.target
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
                "mysqld_pid": t.server.running_pid() or None,
            }
            for t in state.tablets
        ],
        # The migration downstream (`up --target`): same credentials, writable, no tablet.
        "target": {"mysql_host": target.host, "mysql_port": target.port} if target else None,
        "workers": [
            {"pid": p.pid, "name": p.argv[p.argv.index("--name") + 1]}
            for p in state.worker_procs()
            if "--name" in p.argv
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
