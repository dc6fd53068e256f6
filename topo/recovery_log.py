"""The recovery log: one small record per automatic recovery, kept in etcd, so that every
orchestrator instance lists the same history, also after the leader that ran them is gone.

A record says what was detected (problem, tablet, detail), what ran (action), the result
(running, succeeded, failed, skipped, blocked, cancelled, interrupted), why (reason; for a blocked
recovery its category: paused, maintenance, block_period, cooldown, disabled), when, and which
instance ran it. A blocked recovery is one record per stretch of blocking, updated in place
(`count`, `last_seen`).

Interface contract (the same as `topo.store`'s):

- Reads return immutable records carrying the revision they were read at.
- `create` is create-if-absent under the record's id (`NodeExistsError` if taken).
- `update_fields(id, fn)` is read, apply `fn`, compare-and-swap on the revision; a concurrent
  writer costs a retry from a fresh read, never a lost update. `fn` returns None for "no change".
  `NoNodeError` if the record is gone (pruned).
- `prune` deletes each record with a compare-and-swap on the revision it read, so a record that
  was updated meanwhile survives until the next prune. Only the leader prunes.
- Every call finishes within the store's operation timeout or raises `TopoUnavailableError`.

Key layout under the root (default `/vt`):

    global/recovery_log/<id>      id = <start time in ns, 19 digits>-<6 hex digits>

so the keys sort by start time: the newest are the last keys, and keeping the newest N is a
matter of key order. The log is bounded: the leader keeps at most `keep` records (default 500)
and none older than `max_age_s` (default 7 days, counted from the record's last update).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from topo.errors import BadVersionError, InvalidArgumentError, NoNodeError
from topo.kv import EtcdKV
from topo.records import Record
from topo.store import update_record

KEEP = 500
MAX_AGE_S = 7 * 24 * 3600.0


def new_recovery_id(started_at: float | None = None) -> str:
    """A fresh, time-ordered record id."""
    ns = int((time.time() if started_at is None else started_at) * 1e9)
    return f"{ns:019d}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RecoveryRecord(Record):
    """One recovery: detected, ran, result, reason (blocked: category, count, last_seen)."""

    KIND: ClassVar[str] = "recovery"
    id: str
    time: float  # when it started (or was first blocked), epoch seconds
    keyspace: str
    shard: str
    problem: str
    action: str
    result: str
    tablet: str | None = None
    detail: str = ""
    reason: str = ""
    instance_id: str = ""
    category: str | None = None  # blocked recoveries only
    count: int = 1
    last_seen: float | None = None
    duration_ms: float | None = None
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.id or "/" in self.id:
            raise InvalidArgumentError(f"malformed recovery id {self.id!r}")

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> RecoveryRecord:
        """From the recovery code's entry dict (unknown keys ignored)."""
        return cls.from_dict({**entry, "updated_at": time.time()})

    def to_entry(self) -> dict[str, Any]:
        """The shape the API shows (the record's fields, without the schema version)."""
        out = self.to_dict()
        out.pop("version", None)
        return out

    @property
    def last_change(self) -> float:
        return max(self.time, self.last_seen or 0.0, self.updated_at)


class RecoveryLog:
    """The recovery records in etcd (see the module docstring for the contract)."""

    def __init__(self, kv: EtcdKV, root: str) -> None:
        self.kv = kv
        self.prefix = f"{root}/global/recovery_log/"

    def key(self, rec_id: str) -> str:
        if not rec_id or "/" in rec_id:
            raise InvalidArgumentError(f"malformed recovery id {rec_id!r}")
        return self.prefix + rec_id

    async def create(self, rec: RecoveryRecord) -> RecoveryRecord:
        """Create-if-absent; NodeExistsError if the id is taken."""
        kv = await self.kv.create(self.key(rec.id), rec.to_json())
        return rec.with_revision(kv.mod_revision)

    async def get(self, rec_id: str) -> RecoveryRecord:
        kv = await self.kv.get(self.key(rec_id))
        if kv is None:
            raise NoNodeError(f"recovery {rec_id}")
        return RecoveryRecord.from_json(kv.value, revision=kv.mod_revision)

    async def update_fields(
        self, rec_id: str, fn: Callable[[RecoveryRecord], RecoveryRecord | None]
    ) -> RecoveryRecord:
        """Read, apply `fn`, compare-and-swap; on a conflict, again from a fresh read."""
        rec = await update_record(self.kv, self.key(rec_id), RecoveryRecord,
                                  f"recovery {rec_id}", fn)  # fmt: skip
        assert rec is not None
        return rec

    async def list_records(self) -> list[RecoveryRecord]:
        """Every record, newest first (unreadable ones are left out)."""
        out = []
        for kv in await self.kv.get_prefix(self.prefix):
            try:
                out.append(RecoveryRecord.from_json(kv.value, revision=kv.mod_revision))
            except InvalidArgumentError:
                continue
        out.sort(key=lambda r: r.id, reverse=True)
        return out

    async def prune(
        self, *, keep: int = KEEP, max_age_s: float = MAX_AGE_S, now: float | None = None
    ) -> int:
        """Delete the records beyond the newest `keep` and those unchanged for `max_age_s`.
        Returns how many were deleted."""
        now = time.time() if now is None else now
        records = await self.list_records()
        doomed = [r for i, r in enumerate(records) if i >= keep or now - r.last_change > max_age_s]
        deleted = 0
        for r in doomed:
            try:
                await self.kv.delete(self.key(r.id), r.revision)
            except (BadVersionError, NoNodeError):
                continue  # updated meanwhile (kept until the next prune), or already gone
            deleted += 1
        return deleted

    async def mark_interrupted(
        self, *, older_than_s: float, except_instance: str, now: float | None = None
    ) -> list[str]:
        """Records still `running`, started more than `older_than_s` ago by another instance:
        that instance stopped (or lost the lead) before it recorded the result. Marked
        `interrupted` by compare-and-swap; should the instance still finish, its own write of
        the result replaces the mark."""
        now = time.time() if now is None else now
        marked = []
        for r in await self.list_records():
            if r.result != "running" or r.instance_id == except_instance:
                continue
            if now - r.time < older_than_s:
                continue

            def fn(cur: RecoveryRecord) -> RecoveryRecord | None:
                if cur.result != "running":
                    return None
                return dataclasses.replace(
                    cur, result="interrupted", updated_at=now,
                    reason=cur.reason or f"{cur.instance_id} stopped before it recorded the "
                    "result; the health checks look at the shard again",
                )  # fmt: skip

            try:
                await self.update_fields(r.id, fn)
            except (NoNodeError, BadVersionError):
                continue
            marked.append(r.id)
        return marked
