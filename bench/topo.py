"""Topology benchmark: shard lock acquire+release latency (uncontended and with contenders) and
compare-and-swap updates per second on one Shard record, against a real etcd on loopback.

    .venv/bin/python -m bench.topo [--iterations 300] [--contenders 8] [--json out.json]

Prints a summary; never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

from bench.common import run_main, summary_ms, write_json
from orchestrator.local.etcd import start_etcd
from orchestrator.logs import configure_logging
from topo.lock import ShardLock
from topo.records import Keyspace, Shard
from topo.store import TopoStore


async def lock_latency(store: TopoStore, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        lock = ShardLock(store, "bench", "0", action="Bench")
        await lock.acquire()
        await lock.release()
        out.append(time.perf_counter() - t)
    return out


async def contended(stores: list[TopoStore], per_worker: int) -> tuple[list[float], float]:
    """Each worker takes and releases the lock `per_worker` times; latency includes waiting."""
    samples: list[float] = []

    async def worker(store: TopoStore) -> None:
        for _ in range(per_worker):
            t = time.perf_counter()
            async with ShardLock(store, "bench", "0", action="Bench", timeout=60):
                pass
            samples.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in stores))
    return samples, time.perf_counter() - t0


async def cas_rate(stores: list[TopoStore], seconds: float) -> tuple[int, int]:
    """Concurrent read-modify-write increments for `seconds`; returns (updates, final value)."""
    stop = time.perf_counter() + seconds
    done = 0

    def bump(s: Shard) -> Shard:
        return dataclasses.replace(s, primary_term_start_time=s.primary_term_start_time + 1)

    async def worker(store: TopoStore) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await store.update_shard_fields("bench", "0", bump)
            done += 1

    await asyncio.gather(*(worker(s) for s in stores))
    final = (await stores[0].get_shard("bench", "0")).primary_term_start_time
    return done, final


async def main(args: argparse.Namespace) -> None:
    configure_logging(json=False, level="warning")
    with tempfile.TemporaryDirectory() as d:
        (etcd,) = await start_etcd(Path(d))
        try:
            stores = [TopoStore([etcd.endpoint], root="/bench") for _ in range(args.contenders)]
            await stores[0].create_keyspace(Keyspace(name="bench"))
            await stores[0].create_shard(Shard(keyspace="bench", name="0"))
            await lock_latency(stores[0], 20)  # warm up connections
            un = summary_ms(await lock_latency(stores[0], args.iterations))
            samples, wall = await contended(stores, max(1, args.iterations // args.contenders))
            con = summary_ms(samples)
            updates, final = await cas_rate(stores[:2], args.cas_seconds)
            for s in stores:
                await s.close()
        finally:
            etcd.kill()
    doc = {
        "lock_uncontended_ms": un,
        "lock_contended_ms": {**con, "contenders": args.contenders,
                              "acquisitions_per_s": round(len(samples) / wall, 1)},
        "cas_updates_per_s": round(updates / args.cas_seconds, 1),
        "cas_lost_updates": updates - final,
    }  # fmt: skip
    print(
        f"shard lock acquire+release, uncontended: p50 {un['p50']:.2f} ms  p99 {un['p99']:.2f} ms"
        f"  (n={un['n']})"
    )
    print(
        f"with {args.contenders} contenders (incl. waiting): p50 {con['p50']:.2f} ms  "
        f"p99 {con['p99']:.2f} ms, {doc['lock_contended_ms']['acquisitions_per_s']} locks/s"
    )
    print(
        f"CAS updates on one Shard record (2 writers): {doc['cas_updates_per_s']}/s, "
        f"lost updates: {doc['cas_lost_updates']}"
    )
    write_json(args.json, doc)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--contenders", type=int, default=8)
    p.add_argument("--cas-seconds", type=float, default=3.0)
    p.add_argument("--json")
    run_main(main(p.parse_args()))
