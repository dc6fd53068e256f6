"""Run one reparent workflow in a process of its own, so a test can SIGKILL it at a fault point.

Usage:
    python -m tests.helpers.run_workflow --etcd EP --root ROOT --mysql-user U \
        --mysql-password P [--lock-ttl 3] ACTION JSON_ARGS

ACTION is InitShardPrimary, PlannedReparentShard, EmergencyReparentShard or
TabletExternallyReparented; JSON_ARGS holds that workflow's options (`keyspace`, `shard` and the
rest, or `tablet` for TER). Fault points come from the environment (`ORC_FAULT_POINTS`).
The result (or the error) is printed as JSON on stdout, logs go to stderr; exit 0 on success,
1 on failure. The crash tests also call `run_action` in-process to rerun the same command.

The real CLI (`orchestrator ctl`) will do the same; this helper keeps the crash tests
independent of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.logs import configure_logging
from topo.store import TopoStore
from workflows.emergency_reparent import EmergencyReparentOptions, emergency_reparent_shard
from workflows.env import MysqlCredentials, ProgressFn, WorkflowEnv, WorkflowSettings
from workflows.externally_reparented import (
    ExternallyReparentedOptions,
    tablet_externally_reparented,
)
from workflows.faults import FaultPoints
from workflows.init_shard_primary import InitShardPrimaryOptions, init_shard_primary
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard
from workflows.result import ReparentResult

Runner = Callable[..., Awaitable[ReparentResult]]

ACTIONS: dict[str, tuple[type, Runner]] = {
    "InitShardPrimary": (InitShardPrimaryOptions, init_shard_primary),
    "PlannedReparentShard": (PlannedReparentOptions, planned_reparent_shard),
    "EmergencyReparentShard": (EmergencyReparentOptions, emergency_reparent_shard),
    "TabletExternallyReparented": (ExternallyReparentedOptions, tablet_externally_reparented),
}


def build_options(action: str, args: dict[str, Any]) -> Any:
    """The workflow's options record from JSON arguments (lists become tuples)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: want one of {', '.join(ACTIONS)}")
    cls, _ = ACTIONS[action]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


async def run_action(
    env: WorkflowEnv, action: str, args: dict[str, Any], *, progress: ProgressFn | None = None
) -> ReparentResult:
    """Run one workflow with options from `args` (the same call the child process makes)."""
    opts = build_options(action, args)
    return await ACTIONS[action][1](env, opts, progress=progress)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.helpers.run_workflow")
    p.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated")
    p.add_argument("--root", default="/vt")
    p.add_argument("--mysql-user", required=True)
    p.add_argument("--mysql-password", required=True)
    p.add_argument("--lock-ttl", type=int, default=10, help="shard lock lease TTL (s)")
    p.add_argument("--lock-timeout", type=float, default=30.0)
    p.add_argument("--log-level", default="info")
    p.add_argument("action", choices=sorted(ACTIONS))
    p.add_argument("args", help="the workflow's options as a JSON object")
    return p.parse_args(argv)


async def main(ns: argparse.Namespace) -> int:
    store = TopoStore(ns.etcd.split(","), root=ns.root, lock_ttl=ns.lock_ttl)
    env = WorkflowEnv(
        store,
        MysqlCredentials(user=ns.mysql_user, password=ns.mysql_password),
        settings=WorkflowSettings(lock_timeout=ns.lock_timeout),
        faults=FaultPoints(),  # ORC_FAULT_POINTS from the environment
    )
    try:
        result = await run_action(env, ns.action, json.loads(ns.args))
    except Exception as e:
        doc = {"error": str(e) or type(e).__name__, "type": type(e).__name__,
               "code": getattr(e, "code", None)}  # fmt: skip
        print(json.dumps(doc), flush=True)
        return 1
    finally:
        await env.close()
        await store.close()
    print(json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    namespace = parse_args(sys.argv[1:])
    configure_logging(json=True, level=namespace.log_level)
    sys.exit(asyncio.run(main(namespace)))
