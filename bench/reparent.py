"""Failover benchmark: how long writes stop, and whether any acknowledged write is lost.

On a local cluster (1 shard x N MariaDB), a writer follows the serving graph the way a client
would and inserts numbered rows, recording every acknowledged id. Then:

- planned reparents (PRS) round-robin: per run the write-unavailability window (last
  acknowledged write before -> first after) and the command's duration;
- emergency reparents with an explicit ERS command right after SIGKILL of the primary's
  mysqld: kill -> first acknowledged write on the new primary;
- emergency reparents by the service's automatic recovery: the same, split into detection
  (kill -> ERS workflow started) and repair (-> first acknowledged write), p50/p99 of each, at
  the service's default health interval (1 s) unless `--health-interval` says otherwise, with
  event-driven detection on (`--event-detection off`: the cycle alone, as before it);
- finally every acknowledged id must be on the final primary: lost writes are counted.

    .venv/bin/python -m bench.reparent --quick [--durability none,semi_sync] [--json out.json]
        [--png timeline.png]
    .venv/bin/python -m bench.reparent --prs 0 --ers 0 --auto-ers 20 --tablets 4 --tablets-exact \
        --durability semi_sync [--event-detection off]   # automatic failover only

Prints a summary per durability policy; never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import run_main, summary_ms, sweep, write_json
from bench.writer import BenchWriter
from mysqlctl.client import MysqlClient, MysqlParams
from orchestrator.local import cluster
from orchestrator.local.cluster import ClusterSpec, ClusterState
from orchestrator.local.mariadb import MariadbServer
from orchestrator.logs import configure_logging
from topo.records import Durability, TabletType
from workflows.emergency_reparent import EmergencyReparentOptions, emergency_reparent_shard
from workflows.env import WorkflowEnv
from workflows.errors import WorkflowError
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard
from workflows.replication import reparent_tablet, transactions_missing_on


def log(msg: str) -> None:
    print(msg, flush=True)


async def admin(state: ClusterState, alias: str) -> MysqlClient:
    s = state.tablet(alias).server
    return MysqlClient(MysqlParams(s.host, s.port, s.admin_user, s.admin_password))


async def current_primary(state: ClusterState, env: WorkflowEnv) -> str:
    shard = await env.store.get_shard(state.spec.keyspace, "0")
    assert shard.primary_alias is not None
    return shard.primary_alias


async def restore(state: ClusterState, env: WorkflowEnv, alias: str) -> bool:
    """Bring a killed old primary back as a replica, if it holds nothing the shard lacks.

    A primary SIGKILLed under writes (durability none) may have committed transactions that no
    replica received. Its position cannot show that once the new primary has written past the
    same sequence number (MariaDB keeps one GTID per domain), so the check compares binlog
    states (`transactions_missing_on`). A diverged server let back as a replica would stop
    with error 1236 when repointed by the next failover, which then waited for it."""
    server = state.tablet(alias).server
    await server.start_again()
    tablet, primary = await asyncio.gather(
        env.store.get_tablet(alias), env.store.get_tablet(await current_primary(state, env))
    )
    missing = await transactions_missing_on(env, tablet, primary)
    if missing:
        try:
            await rebuild(state, alias, primary.alias)
        except (OSError, RuntimeError) as e:
            log(f"  {alias} came back with transactions the new primary lacks ({missing}) and "
                f"could not be rebuilt ({e}); left as spare")  # fmt: skip
            return False
        log(f"  {alias} came back with transactions the new primary lacks ({missing}); "
            "rebuilt from a dump of the new primary")  # fmt: skip
    await env.store.update_tablet_fields(
        alias, lambda t: dataclasses.replace(t, type=TabletType.REPLICA)
    )
    try:
        await reparent_tablet(env, alias, wait_s=3)
    except WorkflowError as e:
        # Divergence was ruled out above; whatever else keeps it from replicating, it must not
        # stay a replica that the next failover repoints and waits for.
        log(f"  {alias} cannot rejoin ({e}); stopped and left as spare")
        await server.stop()
        await env.store.update_tablet_fields(
            alias, lambda t: dataclasses.replace(t, type=TabletType.SPARE)
        )
        return False
    return True


REBUILT_DATABASES = ("bench", "_vt")  # everything the bench and the workflows write


def _client_args(server: MariadbServer) -> list[str]:
    """The admin user's connection options for MariaDB's command-line clients."""
    return [f"--host={server.host}", f"--port={server.port}",
            f"--user={server.admin_user}", f"--password={server.admin_password}"]  # fmt: skip


async def rebuild(state: ClusterState, alias: str, source_alias: str) -> None:
    """Make a diverged server an exact copy of `source` again, as an operator would rebuild
    one, so that 20 failovers do not use up the tablets: its replication reset, its binlog
    (with the transactions nobody else has) discarded, the databases reloaded from a
    consistent dump of `source` without binlogging (nothing of its own, hence nothing errant),
    and its applied position set to the dump's (`--gtid --master-data`), from which
    `reparent_tablet` then replicates."""
    server, source = state.tablet(alias).server, state.tablet(source_alias).server
    c = await admin(state, alias)
    try:
        await c.execute("STOP SLAVE")
        await c.execute("RESET SLAVE ALL")
        await c.execute("SET sql_log_bin = 0")  # this connection's own statements
        for db in REBUILT_DATABASES:
            await c.execute(f"DROP DATABASE IF EXISTS {db}")
        await c.execute("RESET MASTER")
    finally:
        await c.close()
    dump = await asyncio.create_subprocess_exec(
        "mariadb-dump", *_client_args(source), "--single-transaction", "--gtid",
        "--master-data=1", "--databases", *REBUILT_DATABASES,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    text, err = await dump.communicate()
    if dump.returncode != 0:
        raise RuntimeError(f"mariadb-dump failed: {err.decode(errors='replace').strip()}")
    load = await asyncio.create_subprocess_exec(
        "mariadb", *_client_args(server), "--init-command=SET sql_log_bin = 0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await load.communicate(text)
    if load.returncode != 0:
        raise RuntimeError(f"loading the dump failed: {err.decode(errors='replace').strip()}")
    # Its binlog state starts where the dump's data ends, as if it had replicated all of it:
    # otherwise reparent_tablet, finding a former primary whose applied position is ahead of
    # an empty binlog, would restart it from its own (empty) binlog and replay everything.
    c = await admin(state, alias)
    try:
        row = await c.fetch_one("SELECT @@GLOBAL.gtid_slave_pos AS pos")
        position = str(row["pos"]) if row else ""
        if not position:
            raise RuntimeError("the dump set no replication position")
        await c.execute(f"SET GLOBAL gtid_binlog_state = '{position}'")
    finally:
        await c.close()


async def run_policy(
    args: argparse.Namespace, durability: Durability, workdir: Path
) -> dict[str, Any]:
    auto = args.auto_ers > 0
    if auto:
        os.environ.update({"ORC_HEALTH_INTERVAL_S": str(args.health_interval),
                           "ORC_HEALTH_TIMEOUT_S": str(args.health_interval * 0.8),
                           "ORC_RECOVERY_BLOCK_S": "1", "ORC_LOG_LEVEL": "warning",
                           "ORC_HEALTH_EVENT_DETECTION": args.event_detection})  # fmt: skip
    tablets = args.tablets if args.tablets_exact else args.tablets + args.ers + args.auto_ers
    spec = ClusterSpec(tablets_per_shard=tablets, durability=durability, service=auto)
    state = await cluster.up(workdir / durability.value, spec)
    store = state.store()
    env = WorkflowEnv(store, state.credentials())
    srv = state.tablets[0].server
    writer = BenchWriter(store, "zone1", spec.keyspace, "0", srv.app_user, srv.app_password)
    out: dict[str, Any] = {"durability": durability.value, "tablets": tablets}
    marks: list[tuple[float, str]] = []
    try:
        p = await admin(state, await current_primary(state, env))
        await p.execute("CREATE DATABASE IF NOT EXISTS bench")
        await p.execute("CREATE TABLE IF NOT EXISTS bench.acked (id BIGINT PRIMARY KEY, t DOUBLE)")
        await p.close()
        writer.start()
        await asyncio.sleep(0.5)

        windows, durations = [], []
        spares: set[str] = set()
        for i in range(args.prs):
            primary = await current_primary(state, env)
            usable = [t.alias for t in state.tablets if t.alias not in spares]
            target = usable[(usable.index(primary) + 1) % len(usable)]
            t0 = time.monotonic()
            r = await planned_reparent_shard(
                env, PlannedReparentOptions(spec.keyspace, "0", new_primary=target)
            )
            t1 = time.monotonic()
            marks.append((t0, "PRS"))
            await asyncio.sleep(0.3)
            gap = writer.gap_around(t0, t1)
            windows.append(gap)
            durations.append(t1 - t0)
            log(f"  PRS {i + 1}/{args.prs} -> {target}: window {gap * 1000:.1f} ms "
                f"(MySQL side {r.write_unavailable_ms} ms), command {(t1 - t0) * 1000:.1f} ms")  # fmt: skip
        out["prs"] = {"window_ms": summary_ms(windows), "duration_ms": summary_ms(durations)}

        failovers = []
        for i in range(args.ers):
            primary = await current_primary(state, env)
            t_kill = time.monotonic()
            state.tablet(primary).server.kill()
            marks.append((t_kill, "ERS"))
            r = await emergency_reparent_shard(env, EmergencyReparentOptions(spec.keyspace, "0"))
            first = await _wait_first_ack(writer, t_kill, primary)
            failovers.append(first - t_kill)
            log(f"  ERS {i + 1}/{args.ers}: {primary} killed -> {r.new_primary} took a write "
                f"after {(first - t_kill) * 1000:.1f} ms (command {r.duration_ms} ms)")  # fmt: skip
            if not await restore(state, env, primary):
                spares.add(primary)
        out["ers_explicit"] = {"failover_ms": summary_ms(failovers)}

        auto_failovers, detects, repairs = [], [], []
        for i in range(args.auto_ers):
            # Past the anti-flapping block of the previous recovery, then a random part of a
            # health interval: the kill must fall at any moment of the cycle. Without it each
            # kill came at about the same moment after the cycle that had repaired the shard
            # (repair + restore + 1.5 s), and detection by the cycle alone read 0.9 s every run.
            await asyncio.sleep(1.5 + random.uniform(0.0, args.health_interval))
            primary = await current_primary(state, env)
            t_kill = time.monotonic()
            wall_kill = time.time()
            state.tablet(primary).server.kill()
            marks.append((t_kill, "auto"))
            first = await _wait_first_ack(writer, t_kill, primary, timeout=30)
            started = [
                w.created_at
                for w in await store.list_workflows()
                if w.action == "EmergencyReparentShard" and w.created_at >= wall_kill
            ]
            detect = (min(started) - wall_kill) if started else float("nan")
            auto_failovers.append(first - t_kill)
            detects.append(detect)
            repairs.append(first - t_kill - detect)
            log(
                f"  automatic {i + 1}/{args.auto_ers}: {primary} killed -> first write after "
                f"{(first - t_kill) * 1000:.1f} ms (detected after {detect * 1000:.1f} ms, "
                f"repaired {(first - t_kill - detect) * 1000:.1f} ms later)"
            )
            if not await restore(state, env, primary):
                spares.add(primary)
        if args.auto_ers:
            out["ers"] = {"failover_ms": summary_ms(auto_failovers),
                          "detect_ms": summary_ms(detects), "repair_ms": summary_ms(repairs),
                          "event_detection": args.event_detection,
                          "health_interval_s": args.health_interval}  # fmt: skip
        else:
            out["ers"] = out["ers_explicit"]

        await asyncio.sleep(0.5)
        await writer.stop()
        final = await current_primary(state, env)
        c = await admin(state, final)
        present = {int(r["id"]) for r in await c.fetch_all("SELECT id FROM bench.acked")}
        await c.close()
        lost = [a.id for a in writer.acks if a.id not in present]
        out["writes"] = {"acked": len(writer.acks), "lost": len(lost), "errors": writer.errors}
        log(
            f"  writes: {len(writer.acks)} acknowledged, {len(lost)} lost"
            + (f" (ids {lost[:10]}...)" if lost else "")
        )
        out["_timeline"] = (writer.acks, marks)
        return out
    finally:
        await writer.stop()
        await env.close()
        await store.close()
        await cluster.down(state.dir)


async def _wait_first_ack(
    writer: BenchWriter, after: float, old: str, timeout: float = 30
) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        a = writer.first_ack_after(after, not_on=old)
        if a is not None:
            return a.acked
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no write acknowledged by a new primary within {timeout}s")


def plot(path: str, results: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'); no PNG written")
        return
    fig, axes = plt.subplots(len(results), 1, figsize=(12, 3.5 * len(results)), squeeze=False)
    for ax, res in zip(axes[:, 0], results, strict=True):
        acks, marks = res["_timeline"]
        if not acks:
            continue
        t0 = acks[0].sent
        ax.scatter([a.acked - t0 for a in acks], [(a.acked - a.sent) * 1000 for a in acks], s=2)
        for t, label in marks:
            ax.axvline(t - t0, color={"PRS": "tab:green", "ERS": "tab:red"}.get(label, "tab:purple"),
                       alpha=0.6, lw=1)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("seconds")
        ax.set_ylabel("insert latency (ms)")
        ax.set_title(f"durability {res['durability']}: green PRS, red ERS, purple automatic")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"timeline written to {path}")


async def main(args: argparse.Namespace) -> None:
    configure_logging(json=False, level="error")
    if args.quick:
        args.prs, args.ers, args.auto_ers = 5, 3, 0 if args.no_service else args.auto_ers or 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-reparent-") as d:
        try:
            for name in args.durability.split(","):
                durability = Durability.parse(name)
                log(f"durability {durability.value}:")
                results.append(await run_policy(args, durability, Path(d)))
        finally:
            await sweep(d)
    for r in results:
        prs, ers = r["prs"], r["ers"]
        if "detect_ms" in ers:
            f, d, rep = ers["failover_ms"], ers["detect_ms"], ers["repair_ms"]
            log(f"[{r['durability']}] automatic failover (n={f['n']}, health interval "
                f"{ers['health_interval_s']:g} s, event detection {ers['event_detection']}): "
                f"p50 {f['p50']} ms, p99 {f['p99']} ms, max {f['max']} ms; detection p50 "
                f"{d['p50']} ms, p99 {d['p99']} ms; repair p50 {rep['p50']} ms, p99 "
                f"{rep['p99']} ms")  # fmt: skip
        log(f"[{r['durability']}] PRS window p50 {prs['window_ms']['p50']} ms, p99 "
            f"{prs['window_ms']['p99']} ms, max {prs['window_ms']['max']} ms; PRS duration p50 "
            f"{prs['duration_ms']['p50']} ms; ERS failover p50 {ers['failover_ms']['p50']} ms, "
            f"max {ers['failover_ms']['max']} ms; writes acked {r['writes']['acked']}, "
            f"lost {r['writes']['lost']}")  # fmt: skip
    if args.png:
        plot(args.png, results)
    doc = {r["durability"]: {k: v for k, v in r.items() if not k.startswith("_")} for r in results}
    first = results[0]
    doc.update({k: first[k] for k in ("prs", "ers", "writes")})  # top-level: first policy
    write_json(args.json, doc)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="failover benchmark")
    p.add_argument("--quick", action="store_true", help="5 PRS + 3 ERS per policy")
    p.add_argument("--prs", type=int, default=20)
    p.add_argument("--ers", type=int, default=5)
    p.add_argument("--auto-ers", type=int, default=0, help="automatic recoveries by the service")
    p.add_argument("--no-service", action="store_true")
    p.add_argument("--tablets", type=int, default=3)
    p.add_argument("--tablets-exact", action="store_true",
                   help="exactly --tablets servers (default: one more per ERS run)")  # fmt: skip
    p.add_argument("--health-interval", type=float, default=1.0,
                   help="the service's health_interval_s (its default: 1 s)")  # fmt: skip
    p.add_argument("--event-detection", choices=("on", "off"), default="on",
                   help="the service's health_event_detection (its default: on)")  # fmt: skip
    p.add_argument("--durability", default="none,semi_sync")
    p.add_argument("--json")
    p.add_argument("--png")
    run_main(main(p.parse_args()))
