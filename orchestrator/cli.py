"""The `orchestrator` command: `local up|down|status`, `serve`, and `ctl <Command>`.

Results go to stdout as JSON, progress and logs to stderr, and the exit code is 0 only on
success, so scripts can rely on all three.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from mysqlctl.errors import MysqlError
from orchestrator.logs import configure_logging
from topo.errors import TopoError
from workflows.errors import WorkflowError

_EXPECTED_ERRORS = (TopoError, WorkflowError, MysqlError, OSError, RuntimeError, ValueError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Shard orchestrator for MySQL/MariaDB: topology in etcd, locked and "
        "journaled reparents, health checks with automatic recovery.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_local(sub)
    _add_serve(sub)
    _add_ctl(sub)
    args, rest = parser.parse_known_args(argv)
    if args.cmd != "ctl" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.cmd == "ctl":
        return int(args.func(args, rest))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a clean one-line message for anything we can name
        if not isinstance(e, _EXPECTED_ERRORS):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


# -- local --------------------------------------------------------------------------------------


def _add_local(sub: Any) -> None:
    p = sub.add_parser("local", help="a local cluster on loopback (etcd, MariaDB, service)")
    lsub = p.add_subparsers(dest="local_cmd", required=True)
    up = lsub.add_parser("up", help="start a local cluster and print its JSON description")
    up.add_argument("--dir", required=True, type=Path, help="state directory")
    up.add_argument("--shards", type=int, default=1)
    up.add_argument("--tablets-per-shard", type=int, default=3)
    up.add_argument("--cells", default="zone1", help="comma-separated cell names")
    up.add_argument("--keyspace", default="commerce")
    up.add_argument("--durability", default="none", choices=["none", "semi_sync"])
    up.add_argument("--no-service", action="store_true", help="do not start the service")
    up.add_argument("--demo", action="store_true", help="then run a demo PlannedReparentShard")
    up.set_defaults(func=_local_up)
    down = lsub.add_parser("down", help="stop everything `up` started in --dir")
    down.add_argument("--dir", required=True, type=Path)
    down.add_argument("--purge", action="store_true", help="also delete the directory")
    down.set_defaults(func=_local_down)
    st = lsub.add_parser("status", help="live state of the local cluster")
    st.add_argument("--dir", required=True, type=Path)
    st.add_argument("--json", action="store_true", help="the `up` document, live")
    st.set_defaults(func=_local_status)


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
    )

    async def run() -> dict[str, Any]:
        state = await cluster.up(args.dir, spec)
        if args.demo:
            await _demo(state)
        return await cluster.describe(state)

    doc = asyncio.run(run())
    print(json.dumps(doc, indent=2))
    if args.demo:
        _print_next_steps(doc)
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
        "Local cluster is up. Try:",
        f"  .venv/bin/orchestrator local status --dir {doc['dir']}",
    ]
    if doc.get("api_url"):
        lines += [
            f"  curl -s {doc['api_url']}/api/v1/keyspaces/{ks}/shards/{shard}",
            f"  .venv/bin/orchestrator ctl{server} PlannedReparentShard {ks}/{shard} "
            f"--new-primary {t[min(1, len(t) - 1)]['alias']}",
            f"  .venv/bin/orchestrator ctl{server} ShardReplicationPositions {ks}/{shard}",
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
        print(str(e), file=sys.stderr)
        return 1
    for s in stopped:
        print(f"stopped {s}", file=sys.stderr)
    if args.purge:
        cluster.destroy(args.dir)
    return 0


def _local_status(args: argparse.Namespace) -> int:
    from orchestrator.local import cluster

    configure_logging(json=False, level="error")
    try:
        state = cluster.ClusterState.load(args.dir.absolute())
    except FileNotFoundError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asyncio.run(cluster.describe(state)), indent=2))
        return 0
    rows = asyncio.run(cluster.status_rows(state))
    header = ("TABLET", "SHARD", "ROLE", "READ_ONLY", "REPLICATING FROM", "POSITION", "LAG")
    table = [header] + [
        (
            r["alias"], r["shard"], r["type"],
            "-" if r["read_only"] is None else ("yes" if r["read_only"] else "no"),
            r["replicating_from"] or ("-" if r["error"] is None else f"DOWN: {r['error'][:40]}"),
            r["position"] or "-",
            "-" if r["lag_seconds"] is None else f"{r['lag_seconds']}s",
        )
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


# -- serve and ctl live in their own modules ------------------------------------------------------


def _add_serve(sub: Any) -> None:
    from orchestrator.serve_cli import add_serve_parser

    add_serve_parser(sub)


def _add_ctl(sub: Any) -> None:
    from orchestrator.ctl import add_ctl_parser

    add_ctl_parser(sub)


if __name__ == "__main__":
    raise SystemExit(main())
