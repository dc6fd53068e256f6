"""The demo migration of `orchestrator local up --target --demo`: a small table on each shard,
merged by a task into the target through the service's API, then its query-status.

It goes through the same path a user takes (`POST /api/v1/commands/start-task` with the task
file's text, as `orchestrator ctl start-task FILE` sends it), so a demo that works is a
service that works.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from orchestrator.local.cluster import ClusterState, log
from topo.alias import shard_names

DEMO_TASK = "demo-merge"
DEMO_ROWS = 200


def demo_task_yaml(state: ClusterState) -> str:
    assert state.target is not None
    ks = state.spec.keyspace
    sources = "".join(f"  - source-id: {ks}/{s}\n" for s in shard_names(state.spec.shards))
    return (
        f"name: {DEMO_TASK}\n"
        "task-mode: all\n"
        "shard-mode: pessimistic\n"
        f"target: {{host: {state.target.host}, port: {state.target.port}}}\n"
        f"sources:\n{sources}"
        'block-allow-list: {do-dbs: ["demo_shard_*"]}\n'
        "routes:\n"
        '  - {schema-pattern: "demo_shard_*", table-pattern: "orders",'
        " target-schema: demo, target-table: orders}\n"
    )


async def demo_migration(state: ClusterState) -> dict[str, Any]:
    """Create demo_shard_<n>.orders on each shard's primary, start the task, wait until every
    subtask has caught up with its source, and print query-status."""
    from mysqlctl.session import open_session

    creds = state.credentials()
    store = state.store()
    try:
        for n, shard in enumerate(shard_names(state.spec.shards)):
            primary = (await store.get_shard(state.spec.keyspace, shard)).primary_alias
            assert primary is not None
            srv = state.tablet(primary).server
            db = f"demo_shard_{n}"
            base = n * 1_000_000
            async with await open_session(_params(srv, creds)) as s:
                await s.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
                await s.execute(f"CREATE TABLE IF NOT EXISTS {db}.orders (id BIGINT PRIMARY KEY,"
                                " item VARCHAR(32) NOT NULL, qty INT NOT NULL)")  # fmt: skip
                values = ", ".join(f"({base + i}, 'item-{i}', {i % 7})" for i in range(DEMO_ROWS))
                await s.execute(f"INSERT IGNORE INTO {db}.orders VALUES {values}")
    finally:
        await store.close()
    assert state.api_url is not None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        started = await _command(http, state.api_url, "start-task", {"task": demo_task_yaml(state)})
        log(f"demo start-task {DEMO_TASK}: {json.dumps(started)}")
        deadline = time.monotonic() + 30
        while True:
            status = await _command(http, state.api_url, "query-status", {"name": DEMO_TASK})
            syncs = [e["subTaskStatus"][0].get("sync", {}) for e in status["sources"]]
            if all(s.get("synced") for s in syncs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    log(f"demo query-status {DEMO_TASK}:\n{json.dumps(status, indent=2)}")
    return status


def _params(srv: Any, creds: Any) -> Any:
    from mysqlctl.client import MysqlParams

    return MysqlParams(srv.host, srv.port, creds.user, creds.password)


async def _command(
    http: aiohttp.ClientSession, url: str, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(f"{url}/api/v1/commands/{name}", json=body) as r:
        doc = await r.json()
        if r.status != 200:
            raise RuntimeError(f"{name} failed: HTTP {r.status}: {json.dumps(doc)}")
        return dict(doc)
