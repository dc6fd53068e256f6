from __future__ import annotations

from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard


async def test_smoke(shard_factory) -> None:
    shard = await shard_factory(tablets=3)
    assert await shard.check_invariants() == "zone1-101"
    await shard.create_test_table()
    r = await planned_reparent_shard(
        shard.env, PlannedReparentOptions("commerce", "0", new_primary="zone1-102")
    )
    print(r)
    assert await shard.check_invariants() == "zone1-102"
