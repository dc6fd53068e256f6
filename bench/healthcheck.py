"""Health-check benchmark (issue 5): how many tablets one orchestrator process checks at 1 Hz,
and what one check costs in CPU.

Starts etcd and K real MariaDB servers on loopback, arranged in replication groups of
`--per-shard` servers (the first writable, the others read-only replicas of it). T tablet
records are registered over them in keyspaces and shards, one primary per shard, so that several
tablet records share one server (simulated tablets: T/K per server, printed) and the analysis
sees a healthy, realistic fleet: each shard's primary record points at a group's primary server,
its replica records at that group's replicas.

The orchestrator's own `Service` is built (not run): not the leader, recoveries off. The bench
drives `service.health.cycle()` exactly as `HealthChecker.run()` does (a cycle, then sleep for the
rest of the interval) and measures, after one warm-up cycle that opens the connections:

- checks/s, and whether every cycle finished within the interval;
- CPU seconds of the whole process (`time.process_time`, all threads) per check, and what that
  means in tablets per core at 1 Hz;
- per-check latency (`HealthChecker._check`, including the wait for the concurrency
  semaphore) and per-probe latency (the MySQL round trip alone), p50/p99;
- cycle duration p50/p99, with its phases (topology read; the shards' passes, checks and
  analysis, spread over the pacing window; the rest);
- how busy the host was and the MariaDB servers' CPU per check: they share the host with the
  orchestrator, so on a small machine the ramp's limit can be the host rather than the process
  (`tablets_per_core_at_1hz`, from the process's own CPU, is the figure to compare).

Then a ramp (500, 1000, 2000, 4000... tablets, a few cycles each, bounded by `--ramp-budget`
seconds) finds the largest fleet whose cycles all finish within the interval with no failed
check.

Connections: production `ClientPool` keeps one connection per (host, port). Here many tablet
records share one server, so that pool would serialize them on one connection per server,
which no real fleet (one server per tablet) does. By default the bench therefore gives the
checker a pool with one connection per tablet (`PerTabletPool`, bench only; production is
unchanged), which has the production shape: T connections, T round trips in parallel.
`--shared-connections` uses the production pool instead, for comparison.

    .venv/bin/python -m bench.healthcheck [--servers 30] [--tablets 2000] [--seconds 20]
        [--interval 1.0] [--ramp 500,1000,2000,4000,8000,12000,16000] [--ramp-seconds 5]
        [--ramp-budget 150] [--no-ramp] [--shared-connections] [--concurrency 200]
        [--profile prof.html] [--json out.json]

`--profile` wraps the main measurement in pyinstrument (`pip install pyinstrument` into the
venv; not a project dependency); figures taken under the profiler are inflated by it.
Prints a summary; never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import check_variants
from bench.common import percentile, run_main, summary_ms, sweep, write_json
from mysqlctl.client import MysqlClient, MysqlParams
from orchestrator import metrics as orc_metrics
from orchestrator.health import checker as checker_module
from orchestrator.health import metrics as health_metrics
from orchestrator.health.checker import HealthChecker
from orchestrator.local.etcd import start_etcd
from orchestrator.local.mariadb import MariadbServer, start_mariadb
from orchestrator.logs import configure_logging
from orchestrator.service import Service
from orchestrator.settings import Settings
from topo.records import Keyspace, Shard, Tablet, TabletType
from topo.store import TopoStore
from workflows.env import ClientPool

CELL = "zone1"


def log(msg: str) -> None:
    print(msg, flush=True)


# -- the fleet ------------------------------------------------------------------------------------


class PerTabletPool(ClientPool):
    """One connection per tablet record (bench only): several simulated tablets share a server
    here, but a real fleet has one server, hence one connection, per tablet."""

    def __init__(self, creds: Any) -> None:
        super().__init__(creds)
        self._by_alias: dict[str, MysqlClient] = {}

    def get(self, tablet: Tablet) -> MysqlClient:
        client = self._by_alias.get(tablet.alias)
        if client is None:
            client = MysqlClient(self.params(tablet.mysql_host, tablet.mysql_port))
            self._by_alias[tablet.alias] = client
        return client

    async def drop(self, tablet: Tablet) -> None:
        client = self._by_alias.pop(tablet.alias, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def close(self) -> None:
        clients, self._by_alias = list(self._by_alias.values()), {}
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()


@dataclass
class Fleet:
    """Replication groups of servers; group[0] is writable, the others replicate from it."""

    groups: list[list[MariadbServer]]
    keyspaces: int
    per_shard: int
    shards: int = 0  # registered so far, numbered globally

    def shard(self, n: int) -> tuple[Shard, list[Tablet]]:
        """Shard number `n` (global index): the Shard record and its tablets."""
        ks = f"ks{n % self.keyspaces}"
        name = str(n // self.keyspaces)
        group = self.groups[n % len(self.groups)]
        tablets = []
        for j in range(self.per_shard):
            server = group[j % len(group)]
            tablets.append(
                Tablet(
                    alias=f"{CELL}-{n * self.per_shard + j + 1}",
                    keyspace=ks,
                    shard=name,
                    type=TabletType.PRIMARY if j == 0 else TabletType.REPLICA,
                    mysql_host=server.host,
                    mysql_port=server.port,
                    hostname=f"bench-{n}-{j}",
                )
            )
        shard = Shard(keyspace=ks, name=name, primary_alias=tablets[0].alias)
        return shard, tablets


async def start_fleet(base: Path, servers: int, per_shard: int, max_connections: int) -> Fleet:
    n = max(per_shard, servers // per_shard * per_shard)
    started = await asyncio.gather(
        *(
            start_mariadb(
                base / f"mariadb-{i}",
                server_id=101 + i,
                extra_options={"max-connections": str(max_connections)},
            )
            for i in range(n)
        ),
        return_exceptions=True,
    )
    ok = [s for s in started if isinstance(s, MariadbServer)]
    failed = [s for s in started if isinstance(s, BaseException)]
    if failed:
        for s in ok:
            s.kill()
        raise failed[0]
    groups = [ok[i : i + per_shard] for i in range(0, n, per_shard)]

    async def wire(group: list[MariadbServer]) -> None:
        primary = group[0]
        clients = [
            MysqlClient(MysqlParams(s.host, s.port, s.admin_user, s.admin_password)) for s in group
        ]
        try:
            await clients[0].set_read_only(False)
            for c in clients[1:]:
                await c.set_read_only(True)
                await c.set_replication_source(
                    primary.host,
                    primary.port,
                    user=primary.admin_user,
                    password=primary.admin_password,
                    semi_sync=False,
                )
            deadline = time.monotonic() + 15
            for c in clients[1:]:
                while True:
                    r = (await c.status()).replication
                    if r is not None and r.io_running and r.sql_running:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{c.address} does not replicate: {r}")
                    await asyncio.sleep(0.05)
        finally:
            for c in clients:
                await c.close()

    await asyncio.gather(*(wire(g) for g in groups))
    return Fleet(groups, keyspaces=0, per_shard=per_shard)


async def register(store: TopoStore, fleet: Fleet, tablets: int) -> int:
    """Add shards (and their tablets) until at least `tablets` tablet records exist; returns the
    number of tablet records. Writes go straight to the key-value layer, many at a time."""
    want = math.ceil(tablets / fleet.per_shard)
    if fleet.shards == 0:
        for k in range(fleet.keyspaces):
            await store.create_keyspace(Keyspace(name=f"ks{k}"))
    sem = asyncio.Semaphore(64)

    async def put(key: str, raw: bytes) -> None:
        async with sem:
            await store.kv.create(key, raw)

    writes = []
    for n in range(fleet.shards, want):
        shard, ts = fleet.shard(n)
        writes.append(put(store.shard_key(shard.keyspace, shard.name), shard.to_json()))
        writes.extend(put(store.tablet_key(t.alias), t.to_json()) for t in ts)
    await asyncio.gather(*writes)
    fleet.shards = max(fleet.shards, want)
    return fleet.shards * fleet.per_shard


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Samples taken by wrappers around the checker (see `instrument`)."""

    checks: list[float] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)
    failed: int = 0
    topo_read: list[float] = field(default_factory=list)
    check_all: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.checks.clear()
        self.probes.clear()
        self.topo_read.clear()
        self.check_all.clear()
        self.failed = 0


REC = Recorder()
_observe_probe = health_metrics.observe_probe


def _recording_probe(tablet: Tablet, seconds: float, ok: bool) -> None:
    REC.probes.append(seconds)
    if not ok:
        REC.failed += 1
    _observe_probe(tablet, seconds, ok)


def _timed(fn: Callable[..., Awaitable[Any]], into: list[float]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t)

    return wrapper


def instrument(hc: HealthChecker) -> None:
    """Time `_check` (per check, semaphore wait included), `read_topology` and `_check_shards`
    on this instance; probes (the round trip alone) through the metrics hook."""
    setattr(hc, "_check", _timed(hc._check, REC.checks))  # noqa: B010
    setattr(hc, "read_topology", _timed(hc.read_topology, REC.topo_read))  # noqa: B010
    setattr(hc, "_check_shards", _timed(hc._check_shards, REC.check_all))  # noqa: B010
    setattr(checker_module.metrics, "observe_probe", _recording_probe)  # noqa: B010


SERVER_PIDS: list[int] = []  # the MariaDB servers, whose CPU is accounted separately


def _host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            values = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


def _servers_cpu_s() -> float:
    """CPU seconds (user + system) used so far by the MariaDB servers."""
    total = 0
    for pid in SERVER_PIDS:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


class GcPauses:
    """The garbage collector's collections while in the `with` block, per generation: how many,
    the longest and the total (each one stops the event loop, every check in flight with it)."""

    def __init__(self) -> None:
        self.by_generation: dict[int, list[float]] = {}
        self.cpu_by_generation: dict[int, list[float]] = {}
        self._started = self._started_cpu = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started, self._started_cpu = time.perf_counter(), time.thread_time()
        else:
            took = time.perf_counter() - self._started
            self.by_generation.setdefault(info["generation"], []).append(took)
            cpu = time.thread_time() - self._started_cpu
            self.cpu_by_generation.setdefault(info["generation"], []).append(cpu)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{g}": {"collections": len(ds), "max_ms": round(max(ds) * 1000, 1),
                        "total_ms": round(sum(ds) * 1000, 1),
                        "cpu_max_ms": round(max(self.cpu_by_generation[g]) * 1000, 1)}
            for g, ds in sorted(self.by_generation.items())
        }  # fmt: skip


async def measure(hc: HealthChecker, seconds: float, interval: float) -> dict[str, Any]:
    """Two warm-up cycles an interval apart (the first opens the check connections, the
    second runs while the primary watches the first started open theirs), then cycles as
    `HealthChecker.run()` paces them for `seconds`."""
    await hc.cycle()
    await asyncio.sleep(interval)
    await hc.cycle()
    REC.reset()
    loop = asyncio.get_running_loop()
    cycles: list[float] = []
    pauses = GcPauses()
    host0, servers0 = _host_cpu(), _servers_cpu_s()
    cpu0, t0 = time.process_time(), loop.time()
    with pauses:
        while loop.time() - t0 < seconds:
            started = loop.time()
            await hc.cycle()
            took = loop.time() - started
            cycles.append(took)
            await asyncio.sleep(max(0.0, interval - took))
    wall, cpu = loop.time() - t0, time.process_time() - cpu0
    host1, servers_cpu = _host_cpu(), _servers_cpu_s() - servers0
    host_busy = (host1[0] - host0[0]) / max(1.0, host1[1] - host0[1])
    n = len(REC.checks)
    window = checker_module.pacing_window(len(hc._checked), interval, hc.settings.health_spread)
    rest = [c - a - b for c, a, b in zip(cycles, REC.topo_read, REC.check_all, strict=False)]
    return {
        "tablets": len(hc._tablets),
        "cycles": len(cycles),
        "overruns": sum(1 for c in cycles if c > interval),
        "all_cycles_within_interval": all(c <= interval for c in cycles),
        "checks": n,
        "failed_checks": REC.failed,
        "checks_per_s": round(n / wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_core_fraction": round(cpu / wall, 3),
        "cpu_ms_per_check": round(cpu / n * 1000, 4) if n else None,
        "tablets_per_core_at_1hz": int(n / cpu) if cpu else None,
        # The host is shared with the MariaDB servers (and whatever else runs there): when it is
        # saturated, overruns say more about the host than about the orchestrator process.
        "host_cpu_busy_fraction": round(host_busy, 3),
        "host_cpus": os.cpu_count(),
        "servers_cpu_ms_per_check": round(servers_cpu / n * 1000, 4) if n else None,
        "p50_check_ms": round(percentile(REC.checks, 50) * 1000, 3),
        "p99_check_ms": round(percentile(REC.checks, 99) * 1000, 3),
        "check_ms": summary_ms(REC.checks),
        "probe_ms": summary_ms(REC.probes),
        "cycle_ms": summary_ms(cycles),
        "phase_ms_p50": {
            "topology_read": round(percentile(REC.topo_read, 50) * 1000, 2),
            "checks_and_analysis": round(percentile(REC.check_all, 50) * 1000, 2),
            "analysis_and_rest": round(percentile(rest, 50) * 1000, 2),
        },
        "phase_ms_max": {
            "topology_read": round(max(REC.topo_read, default=0.0) * 1000, 2),
            "checks_and_analysis": round(max(REC.check_all, default=0.0) * 1000, 2),
            "analysis_and_rest": round(max(rest, default=0.0) * 1000, 2),
        },
        "pacing_window_ms": round(1000 * window, 1),
        "gc_thresholds": gc.get_threshold(),
        "gc": pauses.summary(),
    }


# -- the run --------------------------------------------------------------------------------------


def make_service(etcd: str, root: str, fleet: Fleet, args: argparse.Namespace) -> Service:
    server = fleet.groups[0][0]
    settings = Settings(
        etcd_endpoints=(etcd,),
        topo_root=root,
        mysql_user=server.admin_user,
        mysql_password=server.admin_password,
        health_interval_s=args.interval,
        health_timeout_s=args.interval * 0.8,
        health_concurrency=args.concurrency,
        health_spread=args.spread,
        recoveries_enabled=False,
        log_json=True,
    )
    service = Service(settings)
    service.store.kv.on_call = orc_metrics.observe_etcd  # as the API sets it up in production
    hc = service.health
    if not args.shared_connections:
        hc.pool = PerTabletPool(hc.pool.creds)
    instrument(hc)
    return service


async def close_service(service: Service) -> None:
    await service.health.pool.close()
    await service.env.close()
    await service.store.close()


def describe(r: dict[str, Any], interval: float) -> str:
    within = "all within" if r["all_cycles_within_interval"] else f"{r['overruns']} over"
    return (
        f"{r['checks_per_s']:.0f} checks/s, cycles p50 {r['cycle_ms']['p50']:.0f} ms "
        f"p99 {r['cycle_ms']['p99']:.0f} ms ({within} {interval:g} s), "
        f"cpu {r['cpu_ms_per_check']} ms/check ({r['cpu_core_fraction'] * 100:.0f}% of a core), "
        f"check p50 {r['p50_check_ms']:.1f} ms p99 {r['p99_check_ms']:.1f} ms, "
        f"failed {r['failed_checks']}, host cpu {r['host_cpu_busy_fraction'] * 100:.0f}% busy"
    )


async def ramp(
    etcd: str, fleet: Fleet, args: argparse.Namespace, budget_s: float
) -> list[dict[str, Any]]:
    """Grow one fleet step by step; stop at the first step that overruns or fails a check
    (then try the midpoint once, budget permitting), or when the time budget is spent."""
    steps = [int(x) for x in args.ramp.split(",") if x.strip()]
    started = time.monotonic()
    store = TopoStore([etcd], root="/ramp")
    fleet.shards = 0
    service = make_service(etcd, "/ramp", fleet, args)
    out: list[dict[str, Any]] = []
    last_ok = 0
    try:
        i = 0
        while i < len(steps):
            n = steps[i]
            if time.monotonic() - started > budget_s:
                log(f"  ramp: time budget of {budget_s:g} s spent, stopping before {n}")
                break
            await register(store, fleet, n)
            r = await measure(service.health, args.ramp_seconds, args.interval)
            r["sustained"] = r["all_cycles_within_interval"] and r["failed_checks"] == 0
            out.append(r)
            log(
                f"  {r['tablets']:>6} tablets: {'ok ' if r['sustained'] else 'NO '} "
                + describe(r, args.interval)
            )
            if r["sustained"]:
                last_ok = r["tablets"]
                i += 1
                continue
            # The limit lies between the last good step and this one: try the midpoint once,
            # budget permitting (a fleet only grows here, so the midpoint gets a fresh root).
            mid = (last_ok + r["tablets"]) // 2
            if not last_ok or mid - last_ok < 250 or time.monotonic() - started > budget_s * 0.6:
                break
            await close_service(service)
            await store.close()
            store = TopoStore([etcd], root="/ramp-mid")
            fleet.shards = 0
            service = make_service(etcd, "/ramp-mid", fleet, args)
            await register(store, fleet, mid)
            r = await measure(service.health, args.ramp_seconds, args.interval)
            r["sustained"] = r["all_cycles_within_interval"] and r["failed_checks"] == 0
            out.append(r)
            log(
                f"  {r['tablets']:>6} tablets: {'ok ' if r['sustained'] else 'NO '} "
                + describe(r, args.interval)
            )
            break
    finally:
        await close_service(service)
        await store.close()
    return out


async def main(args: argparse.Namespace) -> None:
    configure_logging(json=True, level="info")
    if args.gc == "default":
        gc.set_threshold(700, 10, 10)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per tablet
    biggest = max([args.tablets] + [int(x) for x in args.ramp.split(",") if x.strip()])
    servers_used = max(args.per_shard, args.servers // args.per_shard * args.per_shard)
    # Check connections (ramp midpoints included), plus the primary watches' (one per shard,
    # all on each replication group's first server: `Fleet.shard`), replication and slack.
    watches = math.ceil(biggest / args.per_shard / max(1, servers_used // args.per_shard))
    max_conn = math.ceil(biggest / servers_used * 1.6) + watches + 50
    with tempfile.TemporaryDirectory(prefix="bench-health-") as d:
        t = time.monotonic()
        (etcd,) = await start_etcd(Path(d) / "etcd")
        fleet: Fleet | None = None
        try:
            fleet = await start_fleet(Path(d), args.servers, args.per_shard, max_conn)
            fleet.keyspaces = args.keyspaces
            SERVER_PIDS[:] = [s.pid for g in fleet.groups for s in g]
            n_servers = sum(len(g) for g in fleet.groups)
            log(
                f"etcd + {n_servers} MariaDB servers ({len(fleet.groups)} replication groups of "
                f"{args.per_shard}) up in {time.monotonic() - t:.1f} s"
            )
            if args.variants is not None:
                doc = await run_variants(fleet, n_servers, args)
            else:
                doc = await run(etcd.endpoint, fleet, n_servers, args)
        finally:
            if fleet is not None:
                for g in fleet.groups:
                    for s in g:
                        s.kill()
            etcd.kill()
            await sweep(d)
    write_json(args.json, doc)


async def run_variants(fleet: Fleet, n_servers: int, args: argparse.Namespace) -> dict[str, Any]:
    """`--variants`: the MySQL read of a check with each driver and statement choice, side by
    side over the same fleet (see bench/check_variants.py)."""
    servers = {(s.host, s.port): s for g in fleet.groups for s in g}
    targets = []
    for n in range(math.ceil(args.tablets / fleet.per_shard)):
        for tablet in fleet.shard(n)[1]:
            server = servers[(tablet.mysql_host, tablet.mysql_port)]
            targets.append(
                check_variants.Target(
                    server.host, server.port, server.admin_user, server.admin_password
                )
            )
    names = [v.strip() for v in args.variants.split(",") if v.strip()] or list(
        check_variants.VARIANTS
    )
    unknown = sorted(set(names) - set(check_variants.VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(check_variants.VARIANTS)}")
    log(
        f"{len(targets)} simulated tablets over {n_servers} MariaDB servers "
        f"({len(targets) / n_servers:.1f} per server, one connection each), every "
        f"{args.interval:g} s for {args.seconds:g} s per variant, concurrency {args.concurrency}:"
    )
    host0 = _host_cpu()
    results = await check_variants.compare(
        targets, names, args.seconds, args.interval, args.concurrency, log
    )
    host1 = _host_cpu()
    busy = (host1[0] - host0[0]) / max(1.0, host1[1] - host0[1])
    log(f"host ({os.cpu_count()} CPUs, shared with the MariaDB servers): {busy * 100:.0f}% busy")
    return {
        "tablets": len(targets),
        "servers": n_servers,
        "interval_s": args.interval,
        "seconds_per_variant": args.seconds,
        "concurrency": args.concurrency,
        "host_cpu_busy_fraction": round(busy, 3),
        "variants": results,
    }


async def run(etcd: str, fleet: Fleet, n_servers: int, args: argparse.Namespace) -> dict[str, Any]:
    store = TopoStore([etcd], root="/bench")
    t = time.monotonic()
    tablets = await register(store, fleet, args.tablets)
    await store.close()
    shards = fleet.shards
    log(
        f"registered {tablets} tablets in {shards} shards of {args.keyspaces} keyspaces "
        f"({args.per_shard} per shard, 1 primary) in {time.monotonic() - t:.1f} s: "
        f"{tablets / n_servers:.1f} tablet records per MariaDB server; connections: "
        f"{'shared per server (production pool)' if args.shared_connections else 'one per tablet'}"
    )
    service = make_service(etcd, "/bench", fleet, args)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled", interval=0.001)
    try:
        if profiler is not None:
            profiler.start()
        main_run = await measure(service.health, args.seconds, args.interval)
        if profiler is not None:
            profiler.stop()
            path = Path(args.profile)
            if path.suffix == ".html":
                path.write_text(profiler.output_html())
            else:
                path.write_text(profiler.output_text(unicode=False, color=False))
            log(f"profile written to {path} (figures below include the profiler's overhead)")
    finally:
        await close_service(service)
    r = main_run
    log("")
    log(
        f"{r['tablets']} tablets at interval {args.interval:g} s over {args.seconds:g} s "
        f"({r['cycles']} cycles, concurrency {args.concurrency}):"
    )
    log(
        f"  achieved {r['checks_per_s']:.0f} checks/s; cycles p50 {r['cycle_ms']['p50']:.0f} ms, "
        f"p99 {r['cycle_ms']['p99']:.0f} ms, max {r['cycle_ms']['max']:.0f} ms: "
        + (
            "every cycle finished within the interval"
            if r["all_cycles_within_interval"]
            else f"{r['overruns']} cycles overran the interval"
        )
    )
    log(
        f"  cpu: {r['cpu_ms_per_check']} ms per check ({r['cpu_core_fraction'] * 100:.0f}% of "
        f"one core) -> about {r['tablets_per_core_at_1hz']} tablets per core at 1 Hz"
    )
    log(
        f"  per check (incl. semaphore wait): p50 {r['p50_check_ms']:.2f} ms, "
        f"p99 {r['p99_check_ms']:.2f} ms; MySQL round trip alone: p50 "
        f"{r['probe_ms']['p50']:.2f} ms, p99 {r['probe_ms']['p99']:.2f} ms; "
        f"failed checks: {r['failed_checks']}"
    )
    ph = r["phase_ms_p50"]
    log(
        f"  cycle phases (p50): topology read {ph['topology_read']} ms, the shards' checks and "
        f"analysis {ph['checks_and_analysis']} ms (starts spread over {r['pacing_window_ms']} ms), "
        f"the rest {ph['analysis_and_rest']} ms"
    )
    mx = r["phase_ms_max"]
    log(
        f"  cycle phases (max): topology read {mx['topology_read']} ms, checks and analysis "
        f"{mx['checks_and_analysis']} ms, the rest {mx['analysis_and_rest']} ms"
    )
    log(
        f"  host ({r['host_cpus']} CPUs, shared with the MariaDB servers): "
        f"{r['host_cpu_busy_fraction'] * 100:.0f}% busy; the MariaDB servers used "
        f"{r['servers_cpu_ms_per_check']} ms of CPU per check"
    )
    collections = ", ".join(
        f"{g} {v['collections']} (max {v['max_ms']} ms, total {v['total_ms']} ms, "
        f"max CPU {v['cpu_max_ms']} ms)"
        for g, v in r["gc"].items()
    )
    log(f"  garbage collections {r['gc_thresholds']}: {collections or 'none'}")
    ramp_runs: list[dict[str, Any]] = []
    if not args.no_ramp:
        log("")
        log(f"ramp ({args.ramp_seconds:g} s per step, budget {args.ramp_budget:g} s):")
        ramp_runs = await ramp(etcd, fleet, args, args.ramp_budget)
        ok = [x["tablets"] for x in ramp_runs if x["sustained"]]
        log(
            f"  max sustained at {args.interval:g} s: {max(ok) if ok else 0} tablets"
            + (
                ""
                if any(not x["sustained"] for x in ramp_runs)
                else " (no step overran: the limit is higher)"
            )
        )
    return {
        "tablets": r["tablets"],
        "servers": n_servers,
        "tablets_per_server": round(r["tablets"] / n_servers, 1),
        "connections": "shared" if args.shared_connections else "per_tablet",
        "interval_s": args.interval,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "checks_per_s": r["checks_per_s"],
        "cpu_ms_per_check": r["cpu_ms_per_check"],
        "p99_check_ms": r["p99_check_ms"],
        "main": r,
        "ramp": [
            {
                k: x[k]
                for k in (
                    "tablets",
                    "sustained",
                    "checks_per_s",
                    "cpu_ms_per_check",
                    "p99_check_ms",
                    "failed_checks",
                    "overruns",
                    "cycle_ms",
                )
            }
            for x in ramp_runs
        ],
        "max_sustained_tablets": max(
            (x["tablets"] for x in ramp_runs if x["sustained"]), default=None
        ),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--servers", type=int, default=30)
    p.add_argument("--tablets", type=int, default=2000)
    p.add_argument("--per-shard", type=int, default=3, help="tablets per shard (1 primary)")
    p.add_argument("--keyspaces", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=Settings().health_concurrency)
    p.add_argument(
        "--gc", choices=("tuned", "default"), default="tuned",
        help="garbage collector thresholds: the service's (orchestrator.runtime) or the "
        "interpreter's defaults (700, 10, 10), for comparison",
    )  # fmt: skip
    p.add_argument(
        "--spread",
        type=float,
        default=Settings().health_spread,
        help="fraction of the interval the checks are spread over (0: all at once)",
    )
    p.add_argument("--ramp", default="500,1000,2000,4000,8000,12000,16000")
    p.add_argument("--ramp-seconds", type=float, default=5.0)
    p.add_argument("--ramp-budget", type=float, default=150.0)
    p.add_argument("--no-ramp", action="store_true")
    p.add_argument("--shared-connections", action="store_true")
    p.add_argument("--profile", help="pyinstrument output of the main run (.html or text)")
    p.add_argument(
        "--variants",
        nargs="?",
        const="",
        help="instead of the checker: the MySQL read of a check with each driver/statement "
        f"choice side by side (comma-separated subset of {','.join(check_variants.VARIANTS)}; "
        "all if empty)",
    )
    p.add_argument("--json")
    run_main(main(p.parse_args()))
