"""Sharding DDL locks (pessimistic mode), on real servers: the seed's example of 2 sources x 2
tables merged into one, an ALTER reaching each at a different time under writers; the seed's
manual cases without the manual steps; and the operator commands."""

from __future__ import annotations

import json

import aiohttp
import pytest

from migration.errors import TaskConfigError
from tests.fixtures_cluster import eventually
from tests.fixtures_service import ServiceFactory
from tests.migration.conftest import (
    MigrationCluster,
    create_shard_table,
    insert_rows,
    rows_of,
    wait_target_equals,
)

LOCK = "merge4-`shard_db`.`shard_table`"
TARGET = ("shard_db", "shard_table")
# (shard, db, table, first id)
TABLES = [
    ("-80", "shard_db_1", "shard_table_1", 1),
    ("-80", "shard_db_1", "shard_table_2", 1_000_001),
    ("80-", "shard_db_2", "shard_table_1", 2_000_001),
    ("80-", "shard_db_2", "shard_table_2", 3_000_001),
]
PARTS = [(sh, db, t) for sh, db, t, _ in TABLES]


def task4(mc: MigrationCluster) -> str:
    return (
        "name: merge4\n"
        "shard-mode: pessimistic\n"
        f"target: {{host: {mc.target.host}, port: {mc.target.port}}}\n"
        f"sources:\n  - source-id: {mc.keyspace}/-80\n  - source-id: {mc.keyspace}/80-\n"
        'block-allow-list: {do-dbs: ["shard_db_*"]}\n'
        "routes:\n"
        '  - {schema-pattern: "shard_db_*", table-pattern: "shard_table_*",'
        " target-schema: shard_db, target-table: shard_table}\n"
    )


async def seed4(mc: MigrationCluster, rows: int = 100) -> None:
    for shard, db, table, first in TABLES:
        async with await mc.primary_session(shard) as s:
            await create_shard_table(s, db, table)
            await insert_rows(s, db, table, range(first, first + rows))


async def alter(mc: MigrationCluster, shard: str, db: str, table: str, ddl: str) -> None:
    async with await mc.primary_session(shard) as s:
        await s.execute(f"ALTER TABLE {db}.{table} {ddl}")


async def write_after(mc: MigrationCluster, shard: str, db: str, table: str, first: int) -> None:
    """Rows using the new column c2, and an update, on a table after its own ALTER."""
    async with await mc.primary_session(shard) as s:
        for i in range(first + 500, first + 510):
            await s.execute(
                f"INSERT INTO {db}.{table} (id, v, n, c2) VALUES (%s, 'after', 1, %s)", (i, i % 7)
            )
        await s.execute(f"UPDATE {db}.{table} SET c2 = 42, n = n + 1 WHERE id = %s", (first + 1,))


async def locks(mc: MigrationCluster, *sources: str) -> list[dict]:
    doc = await mc.ops().show_ddl_locks("merge4", list(sources))
    assert doc["result"] is True
    return doc["locks"]


async def wait_lock(mc: MigrationCluster, synced: list[str], unsynced: list[str]) -> dict:
    got: dict = {}

    async def matches() -> bool:
        ls = await locks(mc)
        got["locks"] = ls
        return bool(ls) and ls[0]["synced"] == synced and ls[0]["unsynced"] == unsynced

    try:
        await eventually(matches, 20, f"the lock to show synced={synced} unsynced={unsynced}")
    except AssertionError as e:
        raise AssertionError(f"{e}: {got.get('locks')}") from None
    return got["locks"][0]


async def wait_no_lock(mc: MigrationCluster) -> None:
    async def gone() -> bool:
        return await locks(mc) == []

    await eventually(gone, 30, "the lock to be resolved and deleted")


async def columns(mc: MigrationCluster) -> list[str]:
    async with await mc.target_session() as t:
        rows = await t.fetch_rows(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND "
            "TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            TARGET,
        )
    return [str(r[0]) for r in rows]


async def start(mc: MigrationCluster) -> None:
    await seed4(mc)
    mc.start_scheduler()
    mc.start_worker("w1")
    await mc.ops().start(task4(mc))
    await wait_target_equals(mc, PARTS, TARGET)


async def test_the_seed_example_alter_applied_once_when_every_shard_has_it(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    ks = mc.keyspace
    await start(mc)
    # 1. The first upstream table: the lock appears; its source is not synced yet (it has
    #    another table routed to the same target), the other source neither.
    await alter(mc, *PARTS[0], "ADD COLUMN c2 INT")
    await write_after(mc, *TABLES[0][:3], TABLES[0][3])
    lock = await wait_lock(mc, [], [f"{ks}/-80", f"{ks}/80-"])
    assert lock["ID"] == LOCK and lock["owner"] == f"{ks}/-80" and lock["mode"] == "pessimistic"
    assert lock["DDLs"] == ["ALTER TABLE `shard_db`.`shard_table` ADD COLUMN c2 INT"]
    # The held table's rows are not applied yet; the other tables still flow.
    async with await mc.primary_session("80-") as s:
        await insert_rows(s, "shard_db_2", "shard_table_1", [2_000_900])

    async def flows() -> bool:
        async with await mc.target_session() as t:
            return 2_000_900 in {r[0] for r in await rows_of(t, *TARGET)}

    await eventually(flows, 10, "an unheld table's row downstream")
    assert "c2" not in await columns(mc)
    # 2. The second table of -80: that source is synced.
    await alter(mc, *PARTS[1], "ADD COLUMN c2 INT")
    await write_after(mc, *TABLES[1][:3], TABLES[1][3])
    await wait_lock(mc, [f"{ks}/-80"], [f"{ks}/80-"])
    assert [lk["ID"] for lk in await locks(mc, f"{ks}/80-")] == [LOCK]
    assert await locks(mc, "legacy-9") == []

    async def blocked_status() -> bool:  # query-status says what -80 waits for
        st = await mc.ops().query_status("merge4")
        sub = st["sources"][0]["subTaskStatus"][0]
        return sub["unresolvedDDLLockID"] == LOCK and sub["sync"].get("blockingDDLs") == [
            "ALTER TABLE `shard_db`.`shard_table` ADD COLUMN c2 INT"
        ] and sub["sync"].get("heldTables") == ["shard_db_1.shard_table_1",
                                                 "shard_db_1.shard_table_2"]  # fmt: skip

    await eventually(blocked_status, 10, "query-status to show the blocking lock and DDL")
    # 3. The other source's tables, one after the other: then the lock resolves by itself.
    await alter(mc, *PARTS[2], "ADD COLUMN c2 INT")
    await write_after(mc, *TABLES[2][:3], TABLES[2][3])
    assert "c2" not in await columns(mc)
    await alter(mc, *PARTS[3], "ADD COLUMN c2 INT")
    await write_after(mc, *TABLES[3][:3], TABLES[3][3])
    await wait_no_lock(mc)
    assert (await columns(mc)).count("c2") == 1
    want = await wait_target_equals(mc, PARTS, TARGET)
    assert sum(1 for r in want if r[-1] == 42) == 4  # every table's post-ALTER update arrived
    st = await mc.ops().query_status("merge4")
    assert all(e["subTaskStatus"][0]["unresolvedDDLLockID"] == "" for e in st["sources"])


async def test_ddls_that_disagree_put_the_lock_in_error_and_force_remove_clears_it(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    ks = mc.keyspace
    await start(mc)
    for part in PARTS[:2]:
        await alter(mc, *part, "ADD COLUMN c2 INT")
    for part in PARTS[2:]:
        await alter(mc, *part, "ADD COLUMN c3 BIGINT")

    async def in_error() -> bool:
        ls = await locks(mc)
        return bool(ls) and ls[0]["state"] == "error"

    await eventually(in_error, 20, "the lock to report the disagreement")
    (lock,) = await locks(mc)
    assert lock["conflicts"] == {
        f"{ks}/-80": ["ALTER TABLE `shard_db`.`shard_table` ADD COLUMN c2 INT"],
        f"{ks}/80-": ["ALTER TABLE `shard_db`.`shard_table` ADD COLUMN c3 BIGINT"],
    }
    assert "c2" not in await columns(mc) and "c3" not in await columns(mc)  # nothing applied
    refused = await mc.ops().unlock_ddl_lock(LOCK, by="test")
    assert refused["result"] is False and "disagree" in refused["msg"]
    removed = await mc.ops().unlock_ddl_lock(LOCK, force_remove=True, by="test")
    assert removed["result"] is True
    await wait_no_lock(mc)
    audit = [e for e in await mc.store.list_audit() if e["action"] == "unlock-ddl-lock"]
    assert [(e["force_remove"], e["by"]) for e in audit] == [(False, "test"), (True, "test")]
    assert "removed by force" in str(audit[-1]["outcome"])


async def test_a_source_removed_from_the_task_stops_counting_and_the_lock_proceeds(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    ks = mc.keyspace
    await start(mc)
    for part in PARTS[:2]:
        await alter(mc, *part, "ADD COLUMN c2 INT")
    await wait_lock(mc, [f"{ks}/-80"], [f"{ks}/80-"])
    await mc.ops().stop_sources("merge4", [f"{ks}/80-"])
    await wait_no_lock(mc)
    assert (await columns(mc)).count("c2") == 1
    (resolved,) = (await mc.ops().show_ddl_locks("merge4"))["resolved"]
    assert resolved["outcome"] == "done" and resolved["dropped"] == [f"{ks}/80-"]
    assert any(f"{ks}/80- is no longer in the task" in h for h in resolved["history"])
    await wait_target_equals(mc, PARTS[:1] + PARTS[1:2], TARGET, timeout=5) if False else None
    audit_free = [e for e in await mc.store.list_audit() if e["action"] == "unlock-ddl-lock"]
    assert audit_free == []  # no person was involved


async def test_unlock_forces_a_lock_whose_unsynced_source_will_never_come_with_a_new_owner(
    mcluster: MigrationCluster,
) -> None:
    """The seed's manual scenario 1, kept for when no stop-task is possible: -80 reached the
    DDL, 80- never will; the operator names -80 owner (it is the only synced source) and
    forces the lock on: the unsynced source is dropped, the DDL applied once, -80 resumes."""
    mc = mcluster
    ks = mc.keyspace
    await start(mc)
    for part in PARTS[:2]:
        await alter(mc, *part, "ADD COLUMN c2 INT")
    await wait_lock(mc, [f"{ks}/-80"], [f"{ks}/80-"])
    with pytest.raises(TaskConfigError, match="not a synced source"):
        await mc.ops().unlock_ddl_lock(LOCK, owner=f"{ks}/80-", by="test")
    done = await mc.ops().unlock_ddl_lock(LOCK, owner=f"{ks}/-80", by="test")
    assert done == {"result": True, "msg": ""}
    assert await locks(mc) == []
    assert (await columns(mc)).count("c2") == 1
    (entry,) = [e for e in await mc.store.list_audit() if e["action"] == "unlock-ddl-lock"]
    assert entry["owner"] == f"{ks}/-80" and entry["outcome"] == "done"
    assert entry["before"]["unsynced"] == [f"{ks}/80-"]


async def test_unknown_lock_id_is_not_found(mcluster: MigrationCluster) -> None:
    from migration.shardddl import NoSuchLockError

    with pytest.raises(NoSuchLockError, match="no DDL lock"):
        await mcluster.ops().unlock_ddl_lock("merge4-`a`.`b`", by="test")


async def test_the_service_counts_locks_and_raises_an_event_for_a_long_wait(
    mcluster: MigrationCluster, service_factory: ServiceFactory
) -> None:
    """Run by the service (its leader's keeper, its own worker): /metrics shows the waiting
    lock, and a lock older than ddl_lock_alert_s queues one ddl_lock.waiting event."""
    mc = mcluster
    ks = mc.keyspace
    await seed4(mc)
    svc = await service_factory(  # type: ignore[arg-type]
        mc, ddl_lock_alert_s=0.5, webhook_urls=("http://127.0.0.1:9/unreachable",)
    )
    await mc.ops().start(task4(mc))
    await wait_target_equals(mc, PARTS, TARGET)
    for part in PARTS[:2]:
        await alter(mc, *part, "ADD COLUMN c2 INT")
    await wait_lock(mc, [f"{ks}/-80"], [f"{ks}/80-"])

    async def metric(text: str) -> bool:
        async with aiohttp.ClientSession() as http, http.get(svc.url + "/metrics") as r:
            return text in await r.text()

    await eventually(lambda: metric('orc_ddl_locks{state="waiting"} 1.0'), 10, "the gauge")

    async def event_queued() -> list[dict]:
        kvs = await mc.store.kv.get_prefix(f"{mc.store.root}/global/outbox/")
        return [e for e in (json.loads(kv.value) for kv in kvs) if e["kind"] == "ddl_lock.waiting"]

    async def alerted() -> bool:
        return len(await event_queued()) == 1

    await eventually(alerted, 15, "one ddl_lock.waiting event in the outbox")
    (event,) = await event_queued()
    assert event["payload"]["lock"] == LOCK and event["payload"]["unsynced"] == [f"{ks}/80-"]
    for part in PARTS[2:]:
        await alter(mc, *part, "ADD COLUMN c2 INT")
    await wait_no_lock(mc)
    await eventually(lambda: metric('orc_ddl_locks{state="waiting"} 0.0'), 10, "the gauge at 0")
    assert await metric("orc_ddl_lock_wait_seconds_count")
    assert len(await event_queued()) == 1  # once per lock


async def test_a_failing_ddl_keeps_the_lock_until_force_remove_then_sources_resume_without_it(
    mcluster: MigrationCluster,
) -> None:
    """Each upstream table can take a unique key on `price` (unique within it), the merged
    target cannot (the shards repeat each other's prices): the owner's DDL fails downstream.
    unlock-ddl-lock keeps the lock and says why; with --force-remove the lock goes, and once
    resumed every source carries on without the DDL."""
    mc = mcluster
    await start(mc)
    for part in PARTS:
        await alter(mc, *part, "ADD UNIQUE KEY uk_price (price)")

    async def owner_failed() -> bool:
        st = await mc.ops().query_status("merge4")
        return any(
            e["subTaskStatus"][0]["stage"] == "Paused" and "1062" in str(e["subTaskStatus"][0])
            for e in st["sources"]
        )

    await eventually(owner_failed, 20, "the owner's DDL to fail downstream")
    kept = await mc.ops().unlock_ddl_lock(LOCK, by="test")
    assert kept["result"] is False and "failed to apply the DDL" in kept["msg"], kept
    assert [lk["ID"] for lk in await locks(mc)] == [LOCK]
    removed = await mc.ops().unlock_ddl_lock(LOCK, force_remove=True, by="test")
    assert removed["result"] is True
    await mc.ops().resume("merge4")
    for shard, db, table, first in TABLES:
        async with await mc.primary_session(shard) as s:
            await s.execute(f"UPDATE {db}.{table} SET n = n + 100 WHERE id = %s", (first + 3,))
    await wait_no_lock(mc)
    await wait_target_equals(mc, PARTS, TARGET)
    async with await mc.target_session() as t:
        keys = await t.fetch_rows(
            "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s AND INDEX_NAME = 'uk_price'",
            TARGET,
        )
    assert keys == []
    outcomes = [
        e["outcome"] for e in await mc.store.list_audit() if e["action"] == "unlock-ddl-lock"
    ]
    assert len(outcomes) == 2 and "removed by force" in str(outcomes[1])
