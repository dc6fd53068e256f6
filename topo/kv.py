"""The key-value layer over etcd: every write is a transaction, every call has a deadline.

This is the one place that talks to aetcd. Its contract, which the record store relies on:

- `create` is atomic create-if-absent (`create_revision == 0`).
- `update` and `delete` with an `expected_revision` are compare-and-swap on the key's
  mod_revision: a concurrent writer makes them fail with `BadVersionError`, never overwrite.
- Any write may carry a `Fence` (the shard lock key and the create_revision our lock got). The
  transaction then also requires that exact lock key to still exist, so a holder whose lease
  expired, or whose lock was force-removed and re-taken, cannot write (`LockLostError`).
- `put` is the one write without a compare, for records that only one writer ever writes.
- Every call finishes within `op_timeout` or raises `TopoUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rtypes
import aetcd.utils

from topo.errors import (
    BadVersionError,
    LockLostError,
    NodeExistsError,
    NoNodeError,
    TopoError,
    TopoUnavailableError,
)

WATCH_CANCEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class KeyValue:
    """One stored key as read, with the revisions that make compare-and-swap possible."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True)
class Fence:
    """Proof of holding a lock: the lock key and the create_revision it had when we took it."""

    lock_key: str
    create_revision: int


@dataclass(frozen=True)
class WatchEvent:
    """A change seen by a watch: `value` is None for a deletion."""

    key: str
    value: bytes | None
    mod_revision: int


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """`http://127.0.0.1:2379` or `127.0.0.1:2379` -> (host, port)."""
    text = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise TopoError(f"malformed etcd endpoint {endpoint!r}: want host:port")
    return host, int(port)


class EtcdKV:
    """A connection to etcd (one of several endpoints) with typed errors and deadlines."""

    def __init__(self, endpoints: Sequence[str], *, op_timeout: float = 5.0) -> None:
        if not endpoints:
            raise TopoError("no etcd endpoints given")
        self.endpoints = [parse_endpoint(e) for e in endpoints]
        self.op_timeout = op_timeout
        self._current = 0
        self._client: aetcd.Client | None = None
        self._connect_lock = asyncio.Lock()
        # Observability hook (the service sets it to record metrics; topo imports no metrics
        # library): called after every `call` with (what, seconds, succeeded).
        self.on_call: Callable[[str, float, bool], None] | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._current]
        return f"{host}:{port}"

    async def client(self) -> aetcd.Client:
        if self._client is None:
            async with self._connect_lock:
                if self._client is None:
                    host, port = self.endpoints[self._current]
                    c = aetcd.Client(host=host, port=port, timeout=self.op_timeout)
                    await c.connect()
                    self._client = c
        return self._client

    async def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            with contextlib.suppress(Exception):
                await c.close()

    async def _rotate(self, failed: aetcd.Client | None) -> None:
        """After a failure, the next call goes to the next endpoint (a cluster member died).

        Only the first of several concurrent callers that failed on the same client rotates;
        the others find a new client already in place.
        """
        async with self._connect_lock:
            if failed is not None and self._client is not failed:
                return
            c, self._client = self._client, None
            self._current = (self._current + 1) % len(self.endpoints)
        if c is not None:
            with contextlib.suppress(Exception):
                await c.close()

    async def call(self, op: Callable[[aetcd.Client], Any], *, what: str = "etcd") -> Any:
        """Run one etcd operation with a deadline; retry on the next endpoint on failure."""
        if self.on_call is None:
            return await self._call(op, what)
        started = time.monotonic()
        ok = False
        try:
            result = await self._call(op, what)
            ok = True
            return result
        finally:
            with contextlib.suppress(Exception):
                self.on_call(what, time.monotonic() - started, ok)

    async def _call(self, op: Callable[[aetcd.Client], Any], what: str) -> Any:
        attempts = max(2, len(self.endpoints))
        last: BaseException | None = None
        for _ in range(attempts):
            client: aetcd.Client | None = None
            try:
                client = await self.client()
                async with asyncio.timeout(self.op_timeout):
                    return await op(client)
            except asyncio.CancelledError as e:
                # Closing a channel (another caller rotating away from a dead member) cancels
                # the RPCs in flight on it; only a cancellation of our own task is real.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                last = e
            except (TimeoutError, aetcd.exceptions.ConnectionFailedError) as e:
                last = e
            except aetcd.exceptions.ConnectionTimeoutError as e:
                last = e
            except aetcd.exceptions.ClientError as e:
                if "connection" in str(e).lower() or "unavailable" in str(e).lower():
                    last = e
                else:
                    raise TopoError(f"{what}: {e}") from e
            await self._rotate(client)
        raise TopoUnavailableError(f"{what}: etcd unavailable ({self.endpoint}): {last!r}")

    # -- reads ---------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        res = await self.call(lambda c: c.get(key.encode()), what=f"get {key}")
        return None if res is None else _kv(res)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False) -> list[KeyValue]:
        """Every key under `prefix`; with `keys_only`, values are left empty (not sent)."""
        res = await self.call(
            lambda c: c.get_prefix(prefix.encode(), keys_only=keys_only), what=f"list {prefix}"
        )
        return [_kv(kv) for kv in res]

    async def revision(self) -> int:
        """The store's current revision (for starting a watch right after a read)."""
        res = await self.call(lambda c: c.get_prefix(b"\x00", keys_only=True), what="revision")
        return int(res.header.revision)

    # -- writes --------------------------------------------------------------------------

    async def create(
        self, key: str, value: bytes, *, lease: int | None = None, fence: Fence | None = None
    ) -> KeyValue:
        """Create `key`; NodeExistsError if present. Returns what was written."""

        def compare(t: Any) -> list[Any]:
            return [t.create(key.encode()) == 0]

        rev = await self._txn(key, value, compare, lease=lease, fence=fence, absent_ok=True)
        return KeyValue(key, value, rev, rev, lease or 0)

    async def update(
        self, key: str, value: bytes, expected_revision: int, *, fence: Fence | None = None
    ) -> KeyValue:
        """Replace `key` only if its mod_revision is still `expected_revision`."""

        def compare(t: Any) -> list[Any]:
            return [t.mod(key.encode()) == expected_revision]

        rev = await self._txn(key, value, compare, fence=fence, expected=expected_revision)
        return KeyValue(key, value, rev, 0, 0)

    async def delete(
        self, key: str, expected_revision: int | None = None, *, fence: Fence | None = None
    ) -> None:
        """Delete `key` (only at `expected_revision` when given). NoNodeError if absent."""

        def compare(t: Any) -> list[Any]:
            if expected_revision is None:
                return [t.create(key.encode()) > 0]
            return [t.mod(key.encode()) == expected_revision]

        await self._txn(key, None, compare, fence=fence, expected=expected_revision)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Write `key` whatever it holds (no compare): only for records with a single writer,
        such as a worker's own status report. Returns the new mod_revision."""
        res = await self.call(lambda c: c.put(key.encode(), value, lease=lease), what=f"put {key}")
        return int(res.header.revision)

    async def delete_prefix(self, prefix: str) -> int:
        res = await self.call(lambda c: c.delete_prefix(prefix.encode()), what=f"delete {prefix}")
        return int(res.deleted)

    async def _txn(
        self,
        key: str,
        value: bytes | None,
        compare: Callable[[Any], list[Any]],
        *,
        lease: int | None = None,
        fence: Fence | None = None,
        expected: int | None = None,
        absent_ok: bool = False,
    ) -> int:
        """One etcd transaction: key compare (+ fence compare), then put or delete.

        On failure, the failure branch reads the key and the lock key so we can say which
        compare failed without a second round trip.
        """

        async def run(c: aetcd.Client) -> tuple[bool, list[Any], int]:
            t = c.transactions
            checks = compare(t)
            if fence is not None:
                checks.append(t.create(fence.lock_key.encode()) == fence.create_revision)
            op = (
                t.delete(key.encode()) if value is None else t.put(key.encode(), value, lease=lease)
            )
            failure = [t.get(key.encode())]
            if fence is not None:
                failure.append(t.get(fence.lock_key.encode()))
            ok, responses = await c.transaction(compare=checks, success=[op], failure=failure)
            rev = _txn_revision(responses) if ok else 0
            return ok, responses, rev

        ok, responses, rev = await self.call(run, what=f"write {key}")
        if ok:
            return rev
        current = responses[0][0][1] if responses and responses[0] else None
        if fence is not None:
            lock = responses[1][0][1] if len(responses) > 1 and responses[1] else None
            if lock is None or int(lock.create_revision) != fence.create_revision:
                raise LockLostError(f"lock {fence.lock_key} is no longer ours; refused write {key}")
        if absent_ok and current is not None:
            raise NodeExistsError(key)
        if current is None:
            raise NoNodeError(key)
        raise BadVersionError(key, expected or 0)

    # -- leases --------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        lease = await self.call(lambda c: c.lease(ttl), what="grant lease")
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive; returns the TTL left (<= 0: the lease is gone)."""
        reply = await self.call(lambda c: c.refresh_lease(lease_id), what="refresh lease")
        return int(reply.TTL) if reply is not None else 0

    async def revoke_lease(self, lease_id: int) -> None:
        await self.call(lambda c: c.revoke_lease(lease_id), what="revoke lease")

    # -- watches -------------------------------------------------------------------------

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Follow changes to `key` (or every key under it) from `start_revision` on.

        The iterator ends only when the caller stops; an etcd outage raises
        TopoUnavailableError from the iterator.
        """
        c = await self.client()
        range_end = aetcd.utils.prefix_range_end(key.encode()) if prefix else None
        w = await _create_watch(
            c.watch(key.encode(), range_end=range_end, start_revision=start_revision),
            key, self.op_timeout,
        )  # fmt: skip
        try:
            async for ev in w:
                kv = ev.kv
                deleted = ev.kind == aetcd.rtypes.EventKind.DELETE
                yield WatchEvent(
                    kv.key.decode(), None if deleted else bytes(kv.value), int(kv.mod_revision)
                )
        except aetcd.exceptions.ClientError as e:
            await self._rotate(c)  # the member we watched through may be gone
            raise TopoUnavailableError(f"watch {key}: {e!r}") from e
        finally:
            # Bounded: aetcd cancels under a lock shared by every watch of the client, which a
            # watch being created holds while it waits for etcd; an unbounded wait here hung
            # service shutdowns (seen in CI). An abandoned watch goes with the client.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(WATCH_CANCEL_TIMEOUT_S):
                    await w.cancel()


async def _create_watch(creation: Any, key: str, timeout: float) -> Any:
    """aetcd's watch, created in a task of its own that the caller waits for without being
    inside it: a caller cancelled (or timed out) meanwhile leaves at once.

    Inside, aetcd waits for etcd's answer with `wait_for` on a condition of a lock that every
    watch of the client shares (also held while a cancel request waits for room in a bounded
    queue). A cancellation there must re-acquire that lock before it can finish, and on
    Python 3.11 `wait_for` returns the result instead of raising when the answer and the
    cancellation arrive together. Either way the cancelled task went on, or never finished:
    the service shutdowns that hung in CI, in a task inside an etcd watch. A watch created
    after its caller left is cancelled when it arrives."""
    task = asyncio.ensure_future(creation)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        _abandon_creation(task)
        raise
    if not done:
        _abandon_creation(task)
        raise TopoUnavailableError(f"watch {key}: no answer from etcd within {timeout:g}s")
    try:
        return task.result()
    except aetcd.exceptions.ClientError as e:
        raise TopoUnavailableError(f"watch {key}: {e!r}") from e


# Abandoned watch creations and their cancels, kept referenced until they end.
_ORPHANS: set[asyncio.Future[Any]] = set()


def _abandon_creation(task: asyncio.Future[Any]) -> None:
    def keep(f: asyncio.Future[Any]) -> None:
        _ORPHANS.add(f)
        f.add_done_callback(_ORPHANS.discard)
        f.add_done_callback(lambda d: d.cancelled() or d.exception())

    def arrived(t: asyncio.Future[Any]) -> None:
        if not t.cancelled() and t.exception() is None:
            keep(asyncio.ensure_future(
                asyncio.wait_for(t.result().cancel(), WATCH_CANCEL_TIMEOUT_S)))  # fmt: skip

    keep(task)
    task.add_done_callback(arrived)
    task.cancel()


def _kv(res: Any) -> KeyValue:
    return KeyValue(
        key=res.key.decode(),
        value=bytes(res.value),
        mod_revision=int(res.mod_revision),
        create_revision=int(res.create_revision),
        lease=int(res.lease),
    )


def _txn_revision(responses: list[Any]) -> int:
    """The revision a successful transaction produced (from its put or delete response)."""
    for r in responses:
        for name in ("response_put", "response_delete_range"):
            if hasattr(r, name) and r.HasField(name):
                return int(getattr(r, name).header.revision)
    return 0
