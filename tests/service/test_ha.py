"""Several orchestrator instances on one topology: exactly one leader; when it goes away (a
clean stop, or SIGKILL of its process) another takes over within the election TTL and recovers
the next dead primary itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.health.analysis import ProblemKind
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import FAST, recoveries, start_service, wait_for

pytestmark = pytest.mark.slow

ELECTION_TTL_S = FAST["election_ttl_s"]


async def election_holder(shard: Shard) -> str | None:
    kv = await shard.store.kv.get(f"{shard.store.root}/global/election")
    return json.loads(kv.value)["instance_id"] if kv else None


async def test_one_leader_and_a_follower_takes_over_and_recovers(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    # Shards not shared (the setting off): every instance checks every tablet, the leader
    # recovers (tests/service/test_health_share.py covers the shared mode).
    a = await start_service(shard, service_factory, instance_id="orc-a", health_share_shards=False)
    b = await service_factory(shard, **FAST, instance_id="orc-b", health_share_shards=False)
    await wait_for(lambda: b.service.health.cycles >= 2, 5, "the follower's health checks")
    assert (a.service.election.is_leader, b.service.election.is_leader) == (True, False)
    assert b.service.election.leader_id == "orc-a"
    assert await election_holder(shard) == "orc-a"
    # Both check every tablet; only the leader would recover.
    assert set(a.service.health.snapshot()) == set(shard.aliases)
    assert set(b.service.health.snapshot()) == set(shard.aliases)

    stopped_at = time.monotonic()
    await a.stop()
    await wait_for(lambda: b.service.election.is_leader, ELECTION_TTL_S + 1, "orc-b to lead")
    print(f"\ntakeover after the leader stopped: {(time.monotonic() - stopped_at) * 1000:.0f} ms")
    assert time.monotonic() - stopped_at < ELECTION_TTL_S

    shard.server("zone1-101").kill()
    await wait_for(lambda: recoveries(b, ProblemKind.DEAD_PRIMARY, "succeeded"), 10,
                   "the new leader's failover")  # fmt: skip
    assert await shard.check_invariants() != "zone1-101"


async def test_leader_process_killed_with_sigkill_is_replaced_within_the_ttl(
    shard_factory: ShardFactory, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    shard = await shard_factory(tablets=3)
    log_path = tmp_path / "leader.log"
    proc = _serve_in_subprocess(shard, "orc-proc", log_path)
    try:
        await wait_for(lambda: election_holder(shard), 20, "the subprocess to lead")
        assert await election_holder(shard) == "orc-proc"
        b = await service_factory(shard, **FAST, instance_id="orc-local")
        await wait_for(lambda: b.service.health.cycles >= 2, 5, "the follower's health checks")
        assert not b.service.election.is_leader
        assert b.service.election.leader_id == "orc-proc"

        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=5)
        await wait_for(
            lambda: b.service.election.is_leader, ELECTION_TTL_S + 3, "orc-local to lead"
        )
        takeover_s = time.monotonic() - killed_at
        print(f"\ntakeover after SIGKILL of the leader process: {takeover_s * 1000:.0f} ms "
              f"(election TTL {ELECTION_TTL_S} s)")  # fmt: skip
        # The dead leader's lease expires within its TTL (etcd checks expiry about every
        # 500 ms); the follower watches the key and campaigns at once.
        assert takeover_s < ELECTION_TTL_S + 1.0

        shard.server("zone1-101").kill()
        await wait_for(lambda: recoveries(b, ProblemKind.DEAD_PRIMARY, "succeeded"), 10,
                       "the new leader's failover")  # fmt: skip
        assert await shard.check_invariants() != "zone1-101"
    except BaseException:
        print(log_path.read_text()[-5000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def _serve_in_subprocess(shard: Shard, instance_id: str, log_path: Path) -> subprocess.Popen[bytes]:
    """`orchestrator serve` in a process of its own, with the fast test settings."""
    creds = shard.env.creds
    env = {
        **os.environ,
        "ORC_MYSQL_USER": creds.user,
        "ORC_MYSQL_PASSWORD": creds.password,
        "ORC_LOG_JSON": "false",
        **{f"ORC_{k.upper()}": str(v) for k, v in FAST.items()},
    }
    cmd = [
        sys.executable, "-m", "orchestrator", "serve",
        "--etcd", ",".join(shard.state.etcd_endpoints), "--root", shard.store.root,
        "--listen", "127.0.0.1:0", "--instance-id", instance_id,
    ]  # fmt: skip
    with log_path.open("wb") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2]
        )


async def test_new_leader_respects_the_block_period_of_the_previous_one(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    """The instance that recovers the shard (the leader, or with shards shared its owner)
    stops; the one that recovers it next blocks the second failover (the block is in etcd)."""
    shard = await shard_factory(tablets=3)
    a = await start_service(shard, service_factory, instance_id="orc-a", recovery_block_s=60)
    b = await service_factory(shard, **FAST, instance_id="orc-b", recovery_block_s=60)
    await wait_for(lambda: b.service.health.ownership.live == {"orc-a", "orc-b"}, 5, "both live")
    shard.server("zone1-101").kill()
    ran = await wait_for(
        lambda: [rs for rs in (a, b) if recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded")],
        10, "the failover",
    )  # fmt: skip
    (first,) = ran
    other = b if first is a else a
    second = await shard.check_invariants()

    await first.stop()
    shard.server(second).kill()
    blocked = await wait_for(
        lambda: recoveries(other, ProblemKind.DEAD_PRIMARY, "blocked"), ELECTION_TTL_S + 5,
        f"{other.service.settings.instance_id} to block the second failover",
    )  # fmt: skip
    assert "anti-flapping" in blocked[0]["reason"]
    assert await shard.primary_alias() == second
    assert recoveries(other, ProblemKind.DEAD_PRIMARY, "succeeded") == []
