"""Topology records: immutable values that carry the etcd revision they were read at.

A record read from the store knows its `revision` (the key's mod_revision), so the next write can
be a compare-and-swap without a second read (the Patroni pattern). Records are stored as JSON
with a schema `version`; unknown fields are ignored on read so that a newer writer does not break
an older reader.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from topo.alias import TabletAlias, check_cell, check_keyspace, check_shard
from topo.errors import InvalidArgumentError

SCHEMA_VERSION = 1


class TabletType(enum.StrEnum):
    """What a tablet does in its shard. Only `replica` is promotable by default."""

    PRIMARY = "primary"
    REPLICA = "replica"
    RDONLY = "rdonly"
    SPARE = "spare"
    DRAINED = "drained"

    @classmethod
    def parse(cls, text: str) -> TabletType:
        try:
            return cls(str(text).lower())
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise InvalidArgumentError(
                f"unknown tablet type {text!r}: want one of {names}"
            ) from None


class Durability(enum.StrEnum):
    """How many acknowledgements a commit needs: none (async) or semi_sync (one replica ack)."""

    NONE = "none"
    SEMI_SYNC = "semi_sync"

    @classmethod
    def parse(cls, text: str) -> Durability:
        try:
            return cls(str(text).lower())
        except ValueError:
            raise InvalidArgumentError(
                f"unknown durability policy {text!r}: want none or semi_sync"
            ) from None


PROMOTABLE_TYPES = frozenset({TabletType.REPLICA})


@dataclass(frozen=True)
class Record:
    """Base of every stored record: JSON (de)serialisation and the read revision."""

    KIND: ClassVar[str] = "record"
    revision: int = field(default=0, kw_only=True, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if f.name != "revision":
                out[f.name] = _plain(getattr(self, f.name))
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, revision: int = 0) -> Self:
        names = {f.name for f in dataclasses.fields(cls)} - {"revision"}
        kwargs = {k: v for k, v in data.items() if k in names}
        try:
            return cls(**kwargs, revision=revision)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"bad {cls.KIND} record: {e}") from e

    @classmethod
    def from_json(cls, raw: bytes, *, revision: int = 0) -> Self:
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise InvalidArgumentError(f"bad {cls.KIND} record JSON: {e}") from e
        if not isinstance(data, dict):
            raise InvalidArgumentError(f"bad {cls.KIND} record: not an object")
        return cls.from_dict(data, revision=revision)

    def with_revision(self, revision: int) -> Self:
        return dataclasses.replace(self, revision=revision)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Record):
        return {k: v for k, v in value.to_dict().items() if k != "version"}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Keyspace(Record):
    """A keyspace: a logical database split into shards."""

    KIND: ClassVar[str] = "keyspace"
    name: str
    durability_policy: Durability = Durability.NONE
    # Per-keyspace switch for automatic emergency reparents by the health checks.
    auto_recovery: bool = True

    def __post_init__(self) -> None:
        check_keyspace(self.name)
        object.__setattr__(self, "durability_policy", Durability.parse(self.durability_policy))


@dataclass(frozen=True)
class Shard(Record):
    """A shard: a key range of a keyspace with at most one primary."""

    KIND: ClassVar[str] = "shard"
    keyspace: str
    name: str
    primary_alias: str | None = None
    # Nanoseconds since the epoch when the current primary's term began; orders competing claims.
    primary_term_start_time: int = 0
    is_primary_serving: bool = True
    key_range_start: str = ""
    key_range_end: str = ""

    def __post_init__(self) -> None:
        check_keyspace(self.keyspace)
        check_shard(self.name)
        if self.primary_alias is not None:
            TabletAlias.parse(self.primary_alias)

    @property
    def key(self) -> str:
        return f"{self.keyspace}/{self.name}"


@dataclass(frozen=True)
class Tablet(Record):
    """One MySQL/MariaDB server and what it is for. Credentials are never stored here."""

    KIND: ClassVar[str] = "tablet"
    alias: str
    keyspace: str
    shard: str
    type: TabletType
    mysql_host: str
    mysql_port: int
    hostname: str = ""
    primary_term_start_time: int = 0
    # The type the health checks return the tablet to once healthy (None: keep `type`).
    target_type: TabletType | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        TabletAlias.parse(self.alias)
        check_keyspace(self.keyspace)
        check_shard(self.shard)
        object.__setattr__(self, "type", TabletType.parse(self.type))
        if self.target_type is not None:
            object.__setattr__(self, "target_type", TabletType.parse(self.target_type))
        if not isinstance(self.mysql_port, int) or not 0 < self.mysql_port < 65536:
            raise InvalidArgumentError(f"bad mysql_port {self.mysql_port!r}")
        if not self.mysql_host:
            raise InvalidArgumentError("mysql_host is required")

    @functools.cached_property
    def tablet_alias(self) -> TabletAlias:
        """Parsed once per record (records are immutable): listings sort every tablet by it,
        every health cycle."""
        return TabletAlias.parse(self.alias)

    @property
    def cell(self) -> str:
        return self.tablet_alias.cell

    @property
    def address(self) -> str:
        return f"{self.mysql_host}:{self.mysql_port}"


@dataclass(frozen=True)
class ServingEndpoint(Record):
    """Where a client sends queries for one tablet."""

    KIND: ClassVar[str] = "endpoint"
    alias: str
    host: str
    port: int


@dataclass(frozen=True)
class ShardServing(Record):
    """The serving state of one shard as a client sees it."""

    KIND: ClassVar[str] = "shard serving"
    name: str
    key_range_start: str = ""
    key_range_end: str = ""
    primary: ServingEndpoint | None = None
    primary_serving: bool = False
    replicas: tuple[ServingEndpoint, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.primary, dict):
            object.__setattr__(self, "primary", ServingEndpoint.from_dict(self.primary))
        object.__setattr__(
            self,
            "replicas",
            tuple(
                ServingEndpoint.from_dict(r) if isinstance(r, dict) else r for r in self.replicas
            ),
        )


@dataclass(frozen=True)
class SrvKeyspace(Record):
    """The serving graph of one keyspace in one cell: what proxies and clients watch."""

    KIND: ClassVar[str] = "serving graph"
    keyspace: str
    cell: str
    shards: tuple[ShardServing, ...] = ()

    def __post_init__(self) -> None:
        check_keyspace(self.keyspace)
        check_cell(self.cell)
        object.__setattr__(
            self,
            "shards",
            tuple(ShardServing.from_dict(s) if isinstance(s, dict) else s for s in self.shards),
        )

    def shard(self, name: str) -> ShardServing | None:
        return next((s for s in self.shards if s.name == name), None)


@dataclass(frozen=True)
class LockInfo(Record):
    """What a shard lock key holds: who took it, for what, and since when."""

    KIND: ClassVar[str] = "lock"
    keyspace: str
    shard: str
    action: str
    holder_host: str
    holder_pid: int
    instance_id: str
    workflow_id: str = ""
    reason: str = ""
    started_at: float = 0.0
    lease_id: int = 0
    # The lock key's create_revision: the fencing token for writes made under this lock.
    create_revision: int = field(default=0, compare=False)

    def describe(self) -> str:
        return (
            f"{self.action} by {self.instance_id} (pid {self.holder_pid} on {self.holder_host}"
            + (f", workflow {self.workflow_id}" if self.workflow_id else "")
            + ")"
        )

    def __str__(self) -> str:
        return self.describe()


class WorkflowStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class WorkflowStep(Record):
    """One named step of a workflow with its timing; `detail` says what it found or did."""

    KIND: ClassVar[str] = "workflow step"
    name: str
    status: str = "running"
    started_at: float = 0.0
    finished_at: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class WorkflowRecord(Record):
    """Progress and result of one workflow run, kept in etcd so any instance can show it."""

    KIND: ClassVar[str] = "workflow"
    id: str
    action: str
    keyspace: str
    shard: str
    status: WorkflowStatus = WorkflowStatus.RUNNING
    args: dict[str, Any] = field(default_factory=dict)
    steps: tuple[WorkflowStep, ...] = ()
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    instance_id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", WorkflowStatus(self.status))
        object.__setattr__(
            self,
            "steps",
            tuple(WorkflowStep.from_dict(s) if isinstance(s, dict) else s for s in self.steps),
        )
