"""`orchestrator local up|down|status|stop|kill|restart`: the local cluster from the shell.

Results go to stdout as JSON (`up`, `status --json`, the drills), progress to stderr; the exit
code is 0 only on success. See `orchestrator.local.cluster` for what each does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from orchestrator.logs import configure_logging


def add_local_parser(sub: Any) -> None:
    p = sub.add_parser("local", help="a local cluster on loopback (etcd, MariaDB, service)")
    lsub = p.add_subparsers(dest="local_cmd", required=True)
    up = lsub.add_parser(
        "up", help="start a local cluster (or start a stopped one again) and print its JSON "
        "description",
    )  # fmt: skip
    up.add_argument("--dir", required=True, type=Path, help="state directory")
    up.add_argument("--shards", type=int, default=1)
    up.add_argument("--tablets-per-shard", type=int, default=3)
    up.add_argument("--cells", default="zone1", help="comma-separated cell names")
    up.add_argument("--keyspace", default="commerce")
    up.add_argument("--durability", default="none", choices=["none", "semi_sync"])
    up.add_argument("--no-service", action="store_true", help="do not start the service")
    up.add_argument("--target", action="store_true",
                    help="also start a writable MariaDB server, not a tablet, as the downstream "
                    "of migration tasks")  # fmt: skip
    up.add_argument("--workers", type=int, default=0, metavar="N",
                    help="also start N migration worker processes (default 0: the service's "
                    "in-process worker)")  # fmt: skip
    up.add_argument("--demo", action="store_true",
                    help="then run a demo PlannedReparentShard (and, with --target, a demo "
                    "migration task)")  # fmt: skip
    up.set_defaults(func=_local_up)
    down = lsub.add_parser(
        "down", help="stop what runs now in --dir (data kept: `up` starts it again)"
    )
    down.add_argument("--dir", required=True, type=Path)
    down.add_argument("--purge", action="store_true", help="also delete the directory")
    down.set_defaults(func=_local_down)
    st = lsub.add_parser("status", help="live state of the local cluster")
    st.add_argument("--dir", required=True, type=Path)
    st.add_argument("--json", action="store_true", help="the `up` document, live")
    st.set_defaults(func=_local_status)
    for name, what in (
        ("stop", "stop one server cleanly (SIGTERM), or the service"),
        ("kill", "kill one server as a crash would (SIGKILL), or the service"),
        ("restart", "stop (if it runs) and start again one server, or the service"),
    ):
        d = lsub.add_parser(name, help=f"drills: {what}")
        d.add_argument("--dir", required=True, type=Path)
        d.add_argument("tablet", nargs="?", metavar="TABLET", help="a tablet alias, e.g. zone1-101")
        d.add_argument("--service", action="store_true", help="the orchestrator service")
        d.add_argument("--target", action="store_true", help="the migration target server")
        d.set_defaults(func=_local_drill, action=name)


def _local_up(args: argparse.Namespace) -> int:
    from orchestrator.local import cluster
    from topo.records import Durability

    configure_logging(json=False, level="warning")
    spec = cluster.ClusterSpec(
        keyspace=args.keyspace,
        shards=args.shards,
        tablets_per_shard=args.tablets_per_shard,
        cells=tuple(c.strip() for c in args.cells.split(",") if c.strip()),
        durability=Durability.parse(args.durability),
        service=not args.no_service,
        target=args.target,
        workers=args.workers,
    )

    async def run() -> dict[str, Any]:
        state = await cluster.up(args.dir, spec)
        if args.demo:
            await _demo(state)
            if state.target is not None and state.api_url:
                from orchestrator.local.demo import demo_migration

                await demo_migration(state)
        return await cluster.describe(state)

    doc = asyncio.run(run())
    print(json.dumps(doc, indent=2))
    if args.demo:
        _print_next_steps(doc)
    elif doc.get("api_url"):
        print(f"Console (open in a browser): {doc['api_url']}/", file=sys.stderr)
    return 0


async def _demo(state: Any) -> None:
    """A planned reparent to the second tablet of the first shard, then back, with timings."""
    from orchestrator.local.cluster import log
    from workflows.env import WorkflowEnv
    from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard

    store = state.store()
    env = WorkflowEnv(store, state.credentials())
    try:
        shard = state.tablets[0].shard
        first, second = state.tablets[0].alias, state.tablets[1].alias
        for target in (second, first):
            r = await planned_reparent_shard(
                env, PlannedReparentOptions(state.spec.keyspace, shard, new_primary=target)
            )
            log(f"demo PlannedReparentShard -> {target}: {r.duration_ms} ms total, "
                f"writes unavailable {r.write_unavailable_ms} ms")  # fmt: skip
    finally:
        await env.close()
        await store.close()


def _print_next_steps(doc: dict[str, Any]) -> None:
    ks = doc["keyspace"]
    shard = doc["shards"][0]["name"]
    t = doc["tablets"]
    server = f" --server {doc['api_url']}" if doc.get("api_url") else ""
    lines = [
        "",
        f"Console (open in a browser): {doc['api_url']}/" if doc.get("api_url") else "",
        "Local cluster is up. Try:",
        f"  .venv/bin/orchestrator local status --dir {doc['dir']}",
    ]
    if doc.get("api_url"):
        lines += [
            f"  curl -s {doc['api_url']}/api/v1/keyspaces/{ks}/shards/{shard}",
            f"  .venv/bin/orchestrator ctl{server} PlannedReparentShard {ks}/{shard} "
            f"--new-primary {t[min(1, len(t) - 1)]['alias']}",
            f"  .venv/bin/orchestrator ctl{server} ShardReplicationPositions {ks}/{shard}",
            f"  .venv/bin/orchestrator local kill --dir {doc['dir']} {t[0]['alias']}"
            "   # a failover drill",
        ]
        if doc.get("target"):
            lines += [
                f"  .venv/bin/orchestrator ctl{server} query-status demo-merge",
                f"  .venv/bin/orchestrator ctl{server} pause-task demo-merge",
            ]
    lines += [
        f"  mariadb -h127.0.0.1 -P{t[0]['mysql_port']} -u{doc['mysql_user']} "
        f"-p{doc['mysql_password']}",
        "  make stop",
    ]
    print("\n".join(lines), file=sys.stderr)


def _local_down(args: argparse.Namespace) -> int:
    from orchestrator.local import cluster

    try:
        stopped = asyncio.run(cluster.down(args.dir))
    except FileNotFoundError as e:
        if args.purge:  # nothing there: purged already
            return 0
        print(str(e), file=sys.stderr)
        return 1
    for s in stopped:
        print(f"stopped {s}", file=sys.stderr)
    if not stopped:
        print(f"nothing was running in {args.dir}", file=sys.stderr)
    if args.purge:
        cluster.destroy(args.dir)
        print(f"removed {args.dir}", file=sys.stderr)
    return 0


def _load(dir: Path) -> Any:
    from orchestrator.local import cluster

    try:
        return cluster.ClusterState.load(dir.absolute())
    except FileNotFoundError as e:
        print(str(e), file=sys.stderr)
        return None


def _local_status(args: argparse.Namespace) -> int:
    from orchestrator.local import cluster

    configure_logging(json=False, level="error")
    state = _load(args.dir)
    if state is None:
        return 1
    if not state.running():
        print(f"the local cluster in {state.dir} is stopped: `local up --dir {args.dir}` starts "
              f"it again, `local down --dir {args.dir} --purge` removes it", file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        print(json.dumps(asyncio.run(cluster.describe(state)), indent=2))
        return 0
    # What runs, with pids (on stderr: stdout is the table, for scripts).
    for e in state.etcd:
        running = e.refresh()
        print(f"etcd       {e.endpoint}  " + (f"pid {e.pid}" if running else "NOT RUNNING"),
              file=sys.stderr)  # fmt: skip
    for endpoint in state.external_etcd:
        print(f"etcd       {endpoint}  (external)", file=sys.stderr)
    services = state.service_procs()
    print(f"service    {state.api_url or '-'}  "
          + (", ".join(f"pid {p.pid}" for p in services) if services else "NOT RUNNING"),
          file=sys.stderr)  # fmt: skip
    for p in state.worker_procs():
        print(f"worker     pid {p.pid}", file=sys.stderr)
    rows = asyncio.run(cluster.status_rows(state))
    pids = {t.alias: t.server.running_pid() for t in state.tablets}
    header = ("TABLET", "SHARD", "ROLE", "READ_ONLY", "REPLICATING FROM", "POSITION", "LAG",
              "PID", "REPLICATION")  # fmt: skip
    table = [header] + [
        (
            r["alias"], r["shard"], r["type"],
            "-" if r["read_only"] is None else ("yes" if r["read_only"] else "no"),
            r["replicating_from"] or ("-" if r["error"] is None else "DOWN"),
            r["position"] or "-",
            "-" if r["lag_seconds"] is None else f"{r['lag_seconds']}s",
            pids.get(r["alias"]) or "-",
            _replication(r),
        )
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _replication(r: dict[str, Any]) -> str:
    """A tablet's replication in words: never cut short (an error must be read whole)."""
    if r["error"] is not None:
        return f"DOWN: {r['error']}"
    if not r["replicating_from"]:
        return "-"
    io, sql = r["io_running"], r["sql_running"]
    if io and sql:
        return "running"
    if not io and not sql:
        return "stopped"
    return f"IO {'running' if io else 'stopped'}, SQL {'running' if sql else 'stopped'}"


def _local_drill(args: argparse.Namespace) -> int:
    """`local stop|kill|restart --dir D (TABLET | --service | --target)`."""
    from orchestrator.local import cluster

    configure_logging(json=False, level="warning")
    chosen = [x for x in (args.tablet, args.service or None, args.target or None) if x]
    if len(chosen) != 1:
        print(f"error: local {args.action}: name exactly one of TABLET, --service, --target",
              file=sys.stderr)  # fmt: skip
        return 2
    state = _load(args.dir)
    if state is None:
        return 1
    kill = args.action == "kill"

    async def run() -> tuple[str, int]:
        """(what was done, the pid running afterwards or 0)."""
        if args.service:
            if args.action == "restart":
                return await cluster.restart_service(state), state.service_pid
            return await cluster.stop_service(state, kill=kill), 0
        if args.target:
            if state.target is None:
                raise ValueError(f"the local cluster in {state.dir} has no target (up --target)")
            srv = state.target
        else:
            try:
                srv = state.tablet(args.tablet).server
            except KeyError as e:
                raise ValueError(e.args[0]) from None
        if args.action == "restart":
            return await cluster.restart_server(state, srv), srv.pid
        return await cluster.stop_server(srv, kill=kill), 0

    message, pid = asyncio.run(run())
    print(message, file=sys.stderr)
    what = "service" if args.service else ("target" if args.target else args.tablet)
    print(json.dumps({"action": args.action, "what": what, "pid": pid or None,
                      "message": message}))  # fmt: skip
    return 0
