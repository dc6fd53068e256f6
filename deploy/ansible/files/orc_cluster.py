#!/usr/bin/env python3
"""What the playbooks ask the orchestrator service between two steps (standard library only;
run on the control machine with Ansible's own Python).

    orc_cluster.py --server URL [--server URL]... bound --worker W
        the subtasks bound to worker W now, as JSON [[task, source], ...]
    orc_cluster.py --server URL... wait-moved --worker W --subtasks JSON [--timeout S]
        until each of those subtasks is bound to another worker and Running there
    orc_cluster.py --server URL... wait-running [--timeout S]
        until every subtask of every task is bound to a worker and not stopped by this step
        (Running, or Paused/Finished as it was), and a service instance leads
    orc_cluster.py --server URL... wait-member --worker W [--timeout S]
        until worker W is registered (list-member: free or bound), after its start
    orc_cluster.py order-masters --master NAME=URL...
        the service instances in update order, the leader last, as JSON [NAME, ...]

Each --server is tried in turn (one may be restarting). Exit 0 when the condition holds, 1 when
it timed out (with the last state seen on stderr), 2 on bad usage. $ORC_API_TOKEN, when set, is
sent as the bearer token (list-member changes nothing but is not a read-only route).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

# Stages in which a subtask is applying, or was left on purpose (an operator's pause, a
# finished full-mode task): a step must never leave a subtask "New" (unbound) or without worker.
SETTLED = ("Running", "Paused", "Finished")


def _request(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("ORC_API_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["ORC_API_TOKEN"]
    req = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method="POST" if data else "GET",
        headers=headers,
    )
    with urllib.request.urlopen(req, timeout=3) as resp:
        return json.loads(resp.read())


def _any(servers: list[str], path: str, body: dict[str, Any] | None = None) -> Any:
    last: Exception | None = None
    for url in servers:
        try:
            return _request(url, path, body)
        except (OSError, ValueError, urllib.error.URLError) as e:
            last = e
    raise ConnectionError(f"no service answers ({', '.join(servers)}): {last}")


def subtasks(servers: list[str]) -> list[dict[str, str]]:
    """Every subtask: task, source, worker, stage."""
    out = []
    doc = _any(servers, "/api/v1/commands/query-status", {})
    for t in doc.get("tasks", []):
        one = _any(servers, "/api/v1/commands/query-status", {"name": t["taskName"]})
        for e in one.get("sources", []):
            out.append(
                {
                    "task": t["taskName"],
                    "source": e["sourceStatus"]["source"],
                    "worker": e["sourceStatus"]["worker"],
                    "stage": e["subTaskStatus"][0]["stage"],
                }
            )
    return out


def _leader(servers: list[str]) -> str | None:
    for url in servers:
        try:
            if _request(url, "/readyz").get("is_leader"):
                return url
        except (OSError, ValueError, urllib.error.URLError):
            continue
    return None


def _wait(timeout: float, check: Any) -> int:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            ok, last = check()
        except ConnectionError as e:
            ok, last = False, str(e)
        if ok:
            print(json.dumps(last))
            return 0
        if time.monotonic() > deadline:
            print(f"timed out after {timeout:g}s; last seen: {json.dumps(last)}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="orc_cluster.py")
    p.add_argument("--server", action="append", default=[], help="a service URL (repeatable)")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bound")
    b.add_argument("--worker", required=True)
    m = sub.add_parser("wait-moved")
    m.add_argument("--worker", required=True)
    m.add_argument("--subtasks", required=True, help="JSON from `bound`")
    m.add_argument("--timeout", type=float, default=60)
    w = sub.add_parser("wait-member")
    w.add_argument("--worker", required=True)
    w.add_argument("--timeout", type=float, default=60)
    r = sub.add_parser("wait-running")
    r.add_argument("--timeout", type=float, default=60)
    o = sub.add_parser("order-masters")
    o.add_argument("--master", action="append", default=[], metavar="NAME=URL")
    a = p.parse_args(argv)

    if a.cmd == "order-masters":
        masters = [x.split("=", 1) for x in a.master]
        if any(len(x) != 2 for x in masters):
            p.error("--master wants NAME=URL")
        leader = _leader([url for _, url in masters])
        order = [n for n, url in masters if url != leader] + [
            n for n, url in masters if url == leader
        ]
        print(json.dumps(order))
        return 0
    if not a.server:
        p.error("at least one --server")
    if a.cmd == "bound":
        print(
            json.dumps(
                [[s["task"], s["source"]] for s in subtasks(a.server) if s["worker"] == a.worker]
            )
        )
        return 0
    if a.cmd == "wait-moved":
        wanted = {tuple(x) for x in json.loads(a.subtasks)}

        def moved() -> tuple[bool, Any]:
            now = [s for s in subtasks(a.server) if (s["task"], s["source"]) in wanted]
            ok = all(s["worker"] not in ("", a.worker) and s["stage"] == "Running" for s in now)
            return ok, now

        return _wait(a.timeout, moved)

    if a.cmd == "wait-member":

        def registered() -> tuple[bool, Any]:
            doc = _any(
                a.server, "/api/v1/commands/list-member", {"worker": True, "name": [a.worker]}
            )
            rows = [
                r for m in doc.get("members", []) for r in m.get("worker", {}).get("workers", [])
            ]
            ok = any(r["name"] == a.worker and r["stage"] in ("free", "bound") for r in rows)
            return ok, rows

        return _wait(a.timeout, registered)

    def running() -> tuple[bool, Any]:
        now = subtasks(a.server)
        leader = _leader(a.server)
        ok = leader is not None and all(
            (s["stage"] == "Running" and s["worker"]) or s["stage"] in SETTLED[1:] for s in now
        )
        return ok, {"leader": leader, "subtasks": now}

    return _wait(a.timeout, running)


if __name__ == "__main__":
    sys.exit(main())
