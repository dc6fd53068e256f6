"""`orchestrator worker --name W`: run one migration worker alone (no HTTP API, no health
checks), for machines that only move data. It registers under an etcd lease and runs the
subtasks the service leader binds to it. SIGTERM or SIGINT drains it (`migration.worker` step
5): every subtask commits the batch or chunk at hand with its checkpoint, the lease is revoked
and the leader rebinds the subtasks at once; past the bound (5 s) they are cancelled, and a
second signal stops it at once. `offline-member --type worker` drains it the same way, and
the process then exits (0). SIGKILL is safe too: the subtasks move when the lease expires.

Settings as for `serve`: defaults, `--config FILE` (TOML), `ORC_*` environment variables
(the MySQL account: `ORC_MYSQL_USER`, `ORC_MYSQL_PASSWORD`), then these flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from pathlib import Path
from typing import Any

from orchestrator.runtime import tune_gc
from orchestrator.settings import Settings, SettingsError

WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def add_worker_parser(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run a migration worker",
        description="Run a migration worker: it registers in etcd and runs the subtasks "
        "(task, source) the service leader binds to it.",
    )
    p.add_argument("--name", required=True, help="the worker's name (unique among live workers)")
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--etcd", help="etcd endpoints, comma-separated host:port")
    p.add_argument("--root", help="topology root in etcd (default /vt)")
    p.add_argument("--lease-ttl", type=int, metavar="SECONDS",
                   help="the worker's lease TTL (default 3): how soon a dead worker's subtasks "
                   "move elsewhere")  # fmt: skip
    p.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from orchestrator.logs import configure_logging

    if not WORKER_NAME.fullmatch(args.name):
        print(f"orchestrator worker: malformed name {args.name!r} (letters, digits, '_', '.', "
              "'-'; at most 63)", file=sys.stderr)  # fmt: skip
        return 2
    overrides = {"etcd_endpoints": args.etcd, "topo_root": args.root,
                 "worker_lease_ttl_s": args.lease_ttl, "worker_name": args.name}  # fmt: skip
    try:
        settings = Settings.load(config_file=args.config, overrides=overrides)
    except (SettingsError, TypeError) as e:
        print(f"orchestrator worker: bad settings: {e}", file=sys.stderr)
        return 2
    configure_logging(json=settings.log_json, level=settings.log_level)
    tune_gc()
    asyncio.run(_main(settings))
    return 0


async def _main(settings: Settings) -> None:
    from migration.worker import Worker
    from topo.store import TopoStore

    store = TopoStore(settings.etcd_endpoints, root=settings.topo_root)
    worker = Worker(settings.worker_name, store, settings.migration_credentials,
                    lease_ttl=settings.worker_lease_ttl_s)  # fmt: skip
    task = asyncio.create_task(worker.run())
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            task.cancel()
            return
        worker.request_drain()
        loop.call_later(worker.drain_timeout + 3, task.cancel)  # the bound, whatever happens

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await store.close()
