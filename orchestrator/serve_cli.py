"""`orchestrator serve`: run the service (HTTP API, election, health checks, outbox) until
SIGTERM or SIGINT.

Settings come from defaults, then `--config FILE` (TOML), then `ORC_*` environment variables,
then these flags (see `orchestrator.settings`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings, SettingsError


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (loopback) or `[::1]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the orchestrator service",
        description="Run the orchestrator service: HTTP API, leader election, health checks "
        "with automatic recovery, and webhook delivery. Settings: defaults, then --config, "
        "then ORC_* environment variables, then these flags.",
    )
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--etcd", help="etcd endpoints, comma-separated host:port")
    p.add_argument("--root", help="topology root in etcd (default /vt)")
    p.add_argument("--listen", type=parse_listen, metavar="HOST:PORT",
                   help="HTTP API address (default 127.0.0.1:8080; port 0 picks a free one)")  # fmt: skip
    p.add_argument("--instance-id", help="this instance's id (default host-pid-random)")
    p.add_argument("--disable-active-reparents", action="store_true", default=None,
                   help="refuse PlannedReparentShard, EmergencyReparentShard and "
                   "InitShardPrimary (an external tool owns failover)")  # fmt: skip
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from orchestrator.logs import configure_logging
    from orchestrator.runtime import tune_gc
    from orchestrator.service import run_service

    overrides: dict[str, Any] = {
        "etcd_endpoints": args.etcd,
        "topo_root": args.root,
        "instance_id": args.instance_id,
        "disable_active_reparents": args.disable_active_reparents,
    }
    if args.listen is not None:
        overrides["listen_host"], overrides["listen_port"] = args.listen
    try:
        settings = Settings.load(config_file=args.config, overrides=overrides)
    except (SettingsError, TypeError) as e:
        print(f"orchestrator serve: bad settings: {e}", file=sys.stderr)
        return 2
    configure_logging(json=settings.log_json, level=settings.log_level)
    tune_gc()
    return run_service(settings)
