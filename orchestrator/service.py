"""The orchestrator service: one asyncio task tree per process.

Components, each a small module with an `async def run()` that works until cancelled:

- HTTP API (`orchestrator.api`): reads, vtctl-style commands, webhooks in, health endpoints,
  metrics. Every instance serves it.
- Leader election (`orchestrator.election`): one instance at a time holds an etcd lease-bound
  key and is the leader; only the leader runs automatic recoveries.
- Health checks (`orchestrator.health`): the shards are divided among the live instances
  (`orchestrator.health.ownership`, rendezvous hashing over the membership records below); each
  instance polls the tablets of its own shards and turns their analyses into recoveries.
  `/api/v1/health` on any instance gathers the other instances' shares (`views.health`). With
  `health_share_shards` off, every instance polls every tablet and the leader recovers.
- Outbox delivery (`orchestrator.events`): events are written to etcd first and delivered to the
  configured webhook URLs until acknowledged; only the leader delivers, so each event goes out
  from one place.
- Migration (`migration`): the leader binds subtasks to live workers (`migration.scheduler`);
  every instance runs a worker of its own unless `worker_enabled` is off (`orchestrator worker`
  runs one alone).

- Membership (`migration.members`): the instance's record under a lease of its own
  (list-member), and offline-member requests addressed to it (a leader resigns). The health
  checks follow these records to know the live instances.

All state that must survive a restart is in etcd; killing any instance loses nothing.
Shutdown is structured: cancelling `run()` cancels the TaskGroup, and every component cleans up
in its own `finally`. SIGTERM first runs `shutdown()`: the leader resigns its election key (a
follower leads within a moment, not after the TTL) while the worker drains (its subtasks
commit their batch and are rebound at once), both bounded; then everything is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import structlog

from migration.aio import cancel_all_and_wait
from migration.members import MemberStore
from migration.scheduler import Scheduler
from migration.shardddl import DdlLock, LockState
from migration.store import MigrationStore
from migration.tasks import TaskOps
from migration.worker import Worker
from orchestrator.settings import Settings
from topo.store import TopoStore, default_instance_id
from workflows.env import WorkflowEnv

log = structlog.get_logger(__name__)

# How long each component may take to stop once cancelled before it is abandoned.
SHUTDOWN_WAIT_S = 5.0


class Service:
    def __init__(self, settings: Settings) -> None:
        from orchestrator.election import LeaderElection
        from orchestrator.events import EventBus
        from orchestrator.health import HealthChecker

        if not settings.instance_id:
            settings = settings.replace(instance_id=default_instance_id())
        self.settings = settings
        self.started_at = time.time()
        self.store = TopoStore(
            settings.etcd_endpoints,
            root=settings.topo_root,
            instance_id=settings.instance_id,
            lock_ttl=settings.lock_ttl_s,
        )
        self.env = WorkflowEnv(
            self.store, settings.credentials, settings=settings.workflow_settings()
        )
        self.election = LeaderElection(self.store, ttl=settings.election_ttl_s)
        self.events = EventBus(self)
        self.health = HealthChecker(self)
        self.env.last_healthy = self.health.last_healthy_at
        self.migration = TaskOps(self.store, settings.migration_credentials)
        self._alerted: set[str] = set()  # DDL locks a ddl_lock.waiting event was sent for
        self.ready = asyncio.Event()
        self.port: int | None = None
        self.worker: Worker | None = None

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader

    async def run(self) -> None:
        """Serve until cancelled (or SIGTERM/SIGINT when run from `orchestrator serve`)."""
        from orchestrator.api import serve_http

        log.info("orchestrator starting", instance_id=self.settings.instance_id,
                 etcd=list(self.settings.etcd_endpoints), root=self.settings.topo_root)  # fmt: skip
        components = [
            (serve_http(self), "http"),
            (self.election.run(), "election"),
            (self.health.run(), "health"),
            (self.health.ownership.run(), "shard ownership"),
            (self.events.run(), "outbox"),
            (self._schedule_migrations(), "migration scheduler"),
            (self._membership(), "membership"),
        ]
        if self.settings.worker_enabled:
            components.append((self._run_worker(), "migration worker"))
        tasks = [asyncio.create_task(coro, name=name) for coro, name in components]
        try:
            # A component that fails ends the service with its error (as a TaskGroup would);
            # cancellation stops them all, each given SHUTDOWN_WAIT_S: one stuck in a call
            # that does not end on cancellation is abandoned, never the shutdown held up.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            try:
                await cancel_all_and_wait(tasks, SHUTDOWN_WAIT_S)
            finally:
                # Bounded: a server that does not answer must not hold up the shutdown.
                for close in (self.env.close, self.store.close):
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(5):
                            await close()
                log.info("orchestrator stopped", instance_id=self.settings.instance_id)

    async def _schedule_migrations(self) -> None:
        """Bind migration subtasks to workers while this instance leads."""
        scheduler = Scheduler(MigrationStore(self.store.kv, self.store.root))
        scheduler.keeper.on_pass = self._ddl_locks_seen
        while True:
            changed = self.election.changed
            if not self.is_leader:
                await changed.wait()
                continue
            task = asyncio.create_task(scheduler.run(), name="scheduler")
            waiter = asyncio.create_task(changed.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (task, waiter):
                    t.cancel()
                failed = await asyncio.gather(task, waiter, return_exceptions=True)
            for e in failed:
                if isinstance(e, Exception):  # a bug: say so, and schedule again in a moment
                    log.error("migration scheduler failed", error=repr(e), exc_info=e)
                    await asyncio.sleep(1.0)

    async def _ddl_locks_seen(self, locks: list[DdlLock], resolved: list[DdlLock]) -> None:
        """Metrics of the sharding DDL locks, and one `ddl_lock.waiting` event per lock that
        waits longer than `ddl_lock_alert_s`."""
        from orchestrator import events, metrics

        now = time.time()
        for state in LockState:
            metrics.DDL_LOCKS.labels(state.value).set(sum(lk.state == state for lk in locks))
        metrics.DDL_LOCK_OLDEST_S.set(max((now - lk.created_at for lk in locks), default=0.0))
        for lk in resolved:
            metrics.DDL_LOCK_WAIT.observe(max(0.0, now - lk.created_at))
        for lk in locks:
            if now - lk.created_at >= self.settings.ddl_lock_alert_s and lk.id not in self._alerted:
                self._alerted.add(lk.id)
                await self.events.publish_quietly(events.DDL_LOCK_WAITING, {
                    "lock": lk.id, "task": lk.task, "state": lk.state.value, "owner": lk.owner,
                    "synced": list(lk.synced), "unsynced": list(lk.unsynced),
                    "waiting_s": round(now - lk.created_at, 1),
                })  # fmt: skip
        self._alerted &= {lk.id for lk in locks}

    async def _run_worker(self) -> None:
        s = self.settings
        self.worker = Worker(
            s.worker_name or s.instance_id, self.store, s.migration_credentials,
            lease_ttl=s.worker_lease_ttl_s, address=f"{s.listen_host}:{s.listen_port}",
        )  # fmt: skip
        await self.worker.run()

    async def _membership(self) -> None:
        """This instance's record (list-member) on a lease of its own, and the offline-member
        requests addressed to it: a leader resigns and holds off campaigning a moment."""
        from migration.members import MasterRecord
        from migration.worker import VERSION

        members = MemberStore(self.store.kv, self.store.root)
        kv, name, ttl = self.store.kv, self.settings.instance_id, self.settings.election_ttl_s
        while True:
            lease = 0
            try:
                await self.ready.wait()  # the API's port is known
                lease = await kv.grant_lease(ttl)
                rec = MasterRecord(name=name, address=f"{self.settings.listen_host}:{self.port}",
                                   version=VERSION, started_at=self.started_at)  # fmt: skip
                await members.register_master(rec, lease)
                tasks = [asyncio.create_task(self._keep_member_lease(lease)),
                         asyncio.create_task(self._offline_requests(members))]  # fmt: skip
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        t.result()  # its error: register again
                finally:
                    await cancel_all_and_wait(tasks)
            except Exception as e:  # etcd trouble (or a bug): never the whole service's end
                log.warning("membership: trouble, registering again", error=repr(e))
                await asyncio.sleep(1.0)
            finally:
                if lease:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(2):
                            await asyncio.shield(kv.revoke_lease(lease))

    async def _offline_requests(self, members: MemberStore) -> None:
        name = self.settings.instance_id
        while True:
            await members.wait_offline_request("master", name)
            log.info("offline-member: resigning the leadership", instance_id=name)
            self.election.resign(hold_off=max(2.0, self.settings.election_ttl_s))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self.election.released.wait()
            await members.clear_offline_request("master", name)

    async def _keep_member_lease(self, lease: int) -> None:
        from topo.errors import TopoError

        ttl = self.settings.election_ttl_s
        while True:
            await asyncio.sleep(ttl / 3)
            if await self.store.kv.refresh_lease(lease) <= 0:
                raise TopoError("membership lease lost")

    async def shutdown(self, drain_timeout: float = 5.0) -> None:
        """SIGTERM: resign the leadership and drain the worker, together and bounded. The
        caller cancels `run()` afterwards."""
        started = time.monotonic()
        self.election.resign()

        async def resigned() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self.election.released.wait()

        async def drained() -> None:
            if self.worker is None:
                return
            self.worker.request_drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout + 2):
                    await self.worker.drained.wait()

        await asyncio.gather(resigned(), drained())
        log.info("orchestrator shutdown: resigned and drained",
                 took_s=round(time.monotonic() - started, 3))  # fmt: skip


def run_service(settings: Settings) -> int:
    """Entry point of `orchestrator serve`: run until SIGTERM or SIGINT, then shut down."""

    async def main() -> None:
        service = Service(settings)
        task = asyncio.create_task(service.run())
        stopping: list[asyncio.Task[None]] = []

        async def graceful() -> None:
            try:
                await service.shutdown()
            finally:
                task.cancel()

        def on_signal() -> None:
            if stopping or not service.ready.is_set():
                task.cancel()  # a second signal, or not started yet: stop at once
            else:
                stopping.append(asyncio.create_task(graceful()))

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0
