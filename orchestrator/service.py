"""The orchestrator service: one asyncio task tree per process.

Components, each a small module with an `async def run()` that works until cancelled:

- HTTP API (`orchestrator.api`): reads, vtctl-style commands, webhooks in, health endpoints,
  metrics. Every instance serves it.
- Leader election (`orchestrator.election`): one instance at a time holds an etcd lease-bound
  key and is the leader; only the leader runs automatic recoveries.
- Health checks (`orchestrator.health`): every instance polls every tablet (so any instance can
  answer status queries); the leader turns analyses into recoveries.
- Outbox delivery (`orchestrator.events`): events are written to etcd first and delivered to the
  configured webhook URLs until acknowledged; only the leader delivers, so each event goes out
  from one place.
- Migration (`migration`): the leader binds subtasks to live workers (`migration.scheduler`);
  every instance runs a worker of its own unless `worker_enabled` is off (`orchestrator worker`
  runs one alone).

All state that must survive a restart is in etcd; killing any instance loses nothing.
Shutdown is structured: cancelling `run()` cancels the TaskGroup, and every component cleans up
in its own `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import structlog

from migration.scheduler import Scheduler
from migration.shardddl import DdlLock, LockState
from migration.store import MigrationStore
from migration.tasks import TaskOps
from migration.worker import Worker
from orchestrator.settings import Settings
from topo.store import TopoStore, default_instance_id
from workflows.env import WorkflowEnv

log = structlog.get_logger(__name__)


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

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader

    async def run(self) -> None:
        """Serve until cancelled (or SIGTERM/SIGINT when run from `orchestrator serve`)."""
        from orchestrator.api import serve_http

        log.info("orchestrator starting", instance_id=self.settings.instance_id,
                 etcd=list(self.settings.etcd_endpoints), root=self.settings.topo_root)  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(serve_http(self), name="http")
                tg.create_task(self.election.run(), name="election")
                tg.create_task(self.health.run(), name="health")
                tg.create_task(self.events.run(), name="outbox")
                tg.create_task(self._schedule_migrations(), name="migration scheduler")
                if self.settings.worker_enabled:
                    tg.create_task(self._run_worker(), name="migration worker")
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
        await Worker(
            s.worker_name or s.instance_id, self.store, s.migration_credentials,
            lease_ttl=s.worker_lease_ttl_s, address=f"{s.listen_host}:{s.listen_port}",
        ).run()  # fmt: skip


def run_service(settings: Settings) -> int:
    """Entry point of `orchestrator serve`: run until SIGTERM or SIGINT, then shut down."""

    async def main() -> None:
        service = Service(settings)
        task = asyncio.create_task(service.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0
