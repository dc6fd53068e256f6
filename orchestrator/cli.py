"""The `orchestrator` command: `local up|down|status|stop|kill|restart`, `serve`, `worker`,
and `ctl <Command>`.

Results go to stdout as JSON, progress and logs to stderr, and the exit code is 0 only on
success, so scripts can rely on all three.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["ctl"]:
        # The CLI an operator types many times a night: only what `ctl` needs is imported
        # (the service, the launcher and their drivers are not), so it starts in ~0.1 s.
        from orchestrator.ctl import main as ctl_main

        return ctl_main(args_in[1:])
    return _main(args_in)


def _main(argv: list[str]) -> int:
    from mysqlctl.errors import MysqlError
    from topo.errors import TopoError
    from workflows.errors import WorkflowError

    expected = (TopoError, WorkflowError, MysqlError, OSError, RuntimeError, ValueError)
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Shard orchestrator for MySQL/MariaDB: topology in etcd, locked and "
        "journaled reparents, health checks with automatic recovery.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_local(sub)
    _add_serve(sub)
    _add_worker(sub)
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
        if not isinstance(e, expected):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


# -- local, serve and ctl live in their own modules ------------------------------------------------


def _add_local(sub: Any) -> None:
    from orchestrator.local_cli import add_local_parser

    add_local_parser(sub)


def _add_serve(sub: Any) -> None:
    from orchestrator.serve_cli import add_serve_parser

    add_serve_parser(sub)


def _add_worker(sub: Any) -> None:
    from orchestrator.worker_cli import add_worker_parser

    add_worker_parser(sub)


def _add_ctl(sub: Any) -> None:
    from orchestrator.ctl import add_ctl_parser

    add_ctl_parser(sub)


if __name__ == "__main__":
    raise SystemExit(main())
