"""Rendezvous hashing of shards over instances (`orchestrator.health.ownership`): every instance
computes the same owner, the shares are even, and a join or a leave moves only that instance's
share. Pure computation: no etcd, no MySQL."""

from __future__ import annotations

import subprocess
import sys

from orchestrator.health.ownership import owner_of

SHARDS = [f"ks{k}/{i:02x}" for k in range(3) for i in range(200)]
THREE = ["orc-a", "orc-b", "orc-c"]


def owners(instances: list[str]) -> dict[str, str | None]:
    return {s: owner_of(s, instances) for s in SHARDS}


def test_shares_are_even_and_do_not_depend_on_the_order_of_instances() -> None:
    by_shard = owners(THREE)
    assert by_shard == owners(list(reversed(THREE)))
    counts = {i: sum(o == i for o in by_shard.values()) for i in THREE}
    assert all(len(SHARDS) / 3 * 0.8 < c < len(SHARDS) / 3 * 1.2 for c in counts.values()), counts


def test_a_leave_moves_only_the_shards_of_the_instance_that_left() -> None:
    before, after = owners(THREE), owners(["orc-a", "orc-c"])
    moved = {s for s in SHARDS if before[s] != after[s]}
    assert moved == {s for s in SHARDS if before[s] == "orc-b"}
    assert set(after.values()) == {"orc-a", "orc-c"}


def test_a_join_takes_only_its_own_share() -> None:
    before, after = owners(THREE), owners([*THREE, "orc-d"])
    moved = {s for s in SHARDS if before[s] != after[s]}
    assert moved == {s for s in SHARDS if after[s] == "orc-d"}
    assert len(SHARDS) / 4 * 0.8 < len(moved) < len(SHARDS) / 4 * 1.2


def test_no_instance_owns_nothing_and_a_lone_one_owns_everything() -> None:
    assert owner_of("ks/0", []) is None
    assert set(owners(["orc-a"]).values()) == {"orc-a"}


def test_another_python_process_computes_the_same_owners() -> None:
    """`hash()` is salted per process; the weights must not be."""
    code = (
        "from orchestrator.health.ownership import owner_of;"
        f"print(','.join(str(owner_of(s, {THREE!r})) for s in {SHARDS[:50]!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ",".join(str(owner_of(s, THREE)) for s in SHARDS[:50])
