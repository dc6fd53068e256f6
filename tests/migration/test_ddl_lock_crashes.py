"""The unlock survives every crash with no person: a worker SIGKILLed at each named step of
it, the leader SIGKILLed in the middle of a lock transition, and the leader restarted while a
lock waits. Each converges by itself: the DDL applied once downstream, the lock gone, and the
target equal to the union of the upstream tables row by row."""

from __future__ import annotations

import pytest

from tests.fixtures_cluster import eventually
from tests.helpers.service_proc import ServiceProc
from tests.migration.conftest import MigrationCluster, wait_target_equals
from tests.migration.test_ddl_locks import (
    PARTS,
    TABLES,
    TARGET,
    alter,
    columns,
    seed4,
    task4,
    wait_lock,
    wait_no_lock,
    write_after,
)


async def _alter_all(mc: MigrationCluster, parts: list[tuple[str, str, str]] = PARTS) -> None:
    for shard, db, table, first in TABLES:
        if (shard, db, table) in parts:
            await alter(mc, shard, db, table, "ADD COLUMN c2 INT")
            await write_after(mc, shard, db, table, first)


async def _converged(mc: MigrationCluster) -> None:
    await wait_no_lock(mc)
    assert (await columns(mc)).count("c2") == 1
    await wait_target_equals(mc, PARTS, TARGET, timeout=60)


async def _dies(proc: object, timeout: float = 30) -> None:
    async def dead() -> bool:
        return proc.poll() is not None  # type: ignore[attr-defined]

    await eventually(dead, timeout, "the process to kill itself at its fault point")


@pytest.mark.slow
@pytest.mark.parametrize("point", ["ddl.before_exec", "ddl.after_exec", "ddl.before_resume"])
async def test_worker_killed_at_each_step_of_the_unlock_converges(
    mcluster: MigrationCluster, point: str
) -> None:
    mc = mcluster
    await seed4(mc)
    mc.start_scheduler()
    doomed = mc.start_worker_process("w1", faults=point)
    await mc.ops().start(task4(mc))
    await wait_target_equals(mc, PARTS, TARGET)
    await _alter_all(mc)
    await _dies(doomed)
    assert doomed.returncode == -9, mc.worker_log("w1")[-3000:]
    mc.start_worker_process("w2")
    await _converged(mc)


@pytest.mark.slow
async def test_leader_killed_mid_transition_and_restarted_while_a_lock_waits_converges(
    mcluster: MigrationCluster, tmp_path: object
) -> None:
    """The leader (the service, running the keeper) dies at its first lock transition; a new
    one takes over the waiting lock; it is restarted again while the lock still waits for the
    other source; the lock completes under the last one."""
    mc = mcluster
    ks = mc.keyspace
    log = mc.state.dir / "service.log"
    await seed4(mc)
    worker = mc.start_worker_process("w1")
    no_worker = {"ORC_WORKER_ENABLED": "false"}
    first = await ServiceProc.start(mc, log, env={**no_worker,  # type: ignore[arg-type]
                                                  "ORC_FAULT_POINTS": "ddl.keeper_mid_transition"})  # fmt: skip
    try:
        await mc.ops().start(task4(mc))
        await wait_target_equals(mc, PARTS, TARGET)
        await _alter_all(mc, PARTS[:2])
        assert await first.wait_exit(30) == -9, first.log_tail()
        second = await ServiceProc.start(mc, log, env=no_worker)  # type: ignore[arg-type]
        try:
            await wait_lock(mc, [f"{ks}/-80"], [f"{ks}/80-"])
        finally:
            await second.stop()
        third = await ServiceProc.start(mc, log, env=no_worker)  # type: ignore[arg-type]
        try:
            await _alter_all(mc, PARTS[2:])
            await _converged(mc)
        finally:
            await third.stop()
    finally:
        await first.stop()
    assert worker.poll() is None, mc.worker_log("w1")[-3000:]
