"""Task files: DM's YAML shape, parsed strictly into immutable values.

A task says what to move (sources, the block-allow-list, routes) and where (the target). The
parser refuses, with the key that is wrong, anything it does not know: an unknown key is far more
often a typo (`task_mode`, `do-db`) than a new feature, and a typo silently ignored is a migration
that copies the wrong tables. Checks that need the servers (does a route match a table, does the
source log full row images) are in `migration.check`.

    name: merge-orders
    task-mode: all                      # full | incremental | all
    shard-mode: pessimistic             # "" | pessimistic
    meta-schema: dm_meta                # where checkpoints live on the target
    target: {host: 127.0.0.1, port: 3306}
    sources:
      - source-id: commerce/-80         # a shard of ours: follows its tablets
        tablet-types: replica,primary   # the default
      - source-id: legacy-1             # an external server
        from: {host: 127.0.0.1, port: 3307}
    block-allow-list: {do-dbs: ["shard_db_*"]}
    routes:
      - {schema-pattern: "shard_db_*", table-pattern: "shard_table_*",
         target-schema: shard_db, target-table: shard_table}
    safe-mode: false
    loader: {chunk-rows: 5000}
    syncer: {batch: 500}

Credentials are never in a task file: every MySQL account comes from the settings.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from migration.errors import TaskConfigError

TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,47}")
SOURCE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}(/[0-9a-f]*-[0-9a-f]*|/[0-9]+)?")
IDENTIFIER = re.compile(r"[A-Za-z0-9_$-]{1,64}")
PATTERN = re.compile(r"[A-Za-z0-9_$*?-]{1,64}")
HOST = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,253}")
TASK_MODES = ("full", "incremental", "all")
SHARD_MODES = ("", "pessimistic")
TABLET_TYPES = ("replica", "rdonly", "primary")
DEFAULT_TABLET_TYPES = ("replica", "primary")
# Never migrated, whatever the lists say: the servers' own schemas and our bookkeeping.
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys", "_vt"})
MAX_YAML_BYTES = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SourceSpec:
    """One upstream: a shard of our topology (`keyspace/shard`), or an external server."""

    source_id: str
    endpoint: Endpoint | None = None
    tablet_types: tuple[str, ...] = DEFAULT_TABLET_TYPES
    # incremental mode: where to start (a GTID position); default the source's current one.
    start_gtid: str = ""

    @property
    def shard(self) -> tuple[str, str] | None:
        """(keyspace, shard) for a shard source, None for an external or registered one."""
        if self.endpoint is not None or "/" not in self.source_id:
            return None
        ks, shard = self.source_id.split("/", 1)
        return ks, shard


@dataclass(frozen=True)
class TableRef:
    """A (db, table) pattern pair of the block-allow-list."""

    db: str
    table: str

    def matches(self, db: str, table: str) -> bool:
        return fnmatch.fnmatchcase(db, self.db) and fnmatch.fnmatchcase(table, self.table)


@dataclass(frozen=True)
class BlockAllowList:
    do_dbs: tuple[str, ...] = ()
    ignore_dbs: tuple[str, ...] = ()
    do_tables: tuple[TableRef, ...] = ()
    ignore_tables: tuple[TableRef, ...] = ()

    def allows(self, db: str, table: str) -> bool:
        if db in SYSTEM_SCHEMAS:
            return False
        if self.do_dbs and not any(fnmatch.fnmatchcase(db, p) for p in self.do_dbs):
            return False
        if any(fnmatch.fnmatchcase(db, p) for p in self.ignore_dbs):
            return False
        if self.do_tables and not any(t.matches(db, table) for t in self.do_tables):
            return False
        return not any(t.matches(db, table) for t in self.ignore_tables)


@dataclass(frozen=True)
class Route:
    """`schema-pattern`[/`table-pattern`] -> `target-schema`[/`target-table`]. A route without
    a table pattern renames a whole schema; one with a table pattern merges or renames tables
    and takes precedence over a schema route for the tables it matches."""

    index: int
    schema_pattern: str
    table_pattern: str
    target_schema: str
    target_table: str

    @property
    def key(self) -> str:
        return f"routes[{self.index}]"

    @property
    def is_table_rule(self) -> bool:
        return bool(self.table_pattern)

    def matches(self, db: str, table: str) -> bool:
        if not fnmatch.fnmatchcase(db, self.schema_pattern):
            return False
        return not self.table_pattern or fnmatch.fnmatchcase(table, self.table_pattern)

    def target(self, db: str, table: str) -> tuple[str, str]:
        return self.target_schema, (self.target_table or table if self.is_table_rule else table)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    target: Endpoint
    sources: tuple[SourceSpec, ...]
    task_mode: str = "all"
    shard_mode: str = ""
    meta_schema: str = "dm_meta"
    block_allow_list: BlockAllowList = field(default_factory=BlockAllowList)
    routes: tuple[Route, ...] = ()
    safe_mode: bool = False
    chunk_rows: int = 5000
    batch_rows: int = 500
    # The document as given (YAML parsed to plain data), kept in etcd with the task.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def source(self, source_id: str) -> SourceSpec:
        for s in self.sources:
            if s.source_id == source_id:
                return s
        known = ", ".join(s.source_id for s in self.sources)
        raise TaskConfigError(f"task {self.name} has no source {source_id!r} (sources: {known})")

    def allows(self, db: str, table: str) -> bool:
        return db != self.meta_schema and self.block_allow_list.allows(db, table)

    def matching_routes(self, db: str, table: str) -> list[Route]:
        """The routes that claim (db, table): table rules if any match, else schema rules."""
        hits = [r for r in self.routes if r.matches(db, table)]
        table_rules = [r for r in hits if r.is_table_rule]
        return table_rules or hits

    def route(self, db: str, table: str) -> tuple[str, str]:
        """Where rows of upstream (db, table) go; identity when no route matches. A table
        claimed by two routes is refused by check-task, so the first one is the one."""
        hits = self.matching_routes(db, table)
        return hits[0].target(db, table) if hits else (db, table)

    def merges_by_pattern(self, target_db: str, target_table: str) -> bool:
        """Is (target_db, target_table) the fixed target of a wildcard table route?"""
        return any(
            r.is_table_rule and r.target_table == target_table and r.target_schema == target_db
            and any(ch in r.schema_pattern + r.table_pattern for ch in "*?")
            for r in self.routes
        )  # fmt: skip

    def route_schema(self, db: str) -> str:
        """Where a whole upstream schema goes (for CREATE/DROP DATABASE)."""
        for r in self.routes:
            if not r.is_table_rule and fnmatch.fnmatchcase(db, r.schema_pattern):
                return r.target_schema
        return db


# -- parsing ----------------------------------------------------------------------------------

_TOP_KEYS = {
    "name", "task-mode", "shard-mode", "meta-schema", "target", "sources", "block-allow-list",
    "routes", "safe-mode", "loader", "syncer",
}  # fmt: skip
_SOURCE_KEYS = {"source-id", "from", "tablet-types", "gtid"}
_ENDPOINT_KEYS = {"host", "port"}
_BAL_KEYS = {"do-dbs", "ignore-dbs", "do-tables", "ignore-tables"}
_TABLE_REF_KEYS = {"db-name", "tbl-name"}
_ROUTE_KEYS = {"schema-pattern", "table-pattern", "target-schema", "target-table"}
_CREDENTIAL_KEYS = {"user", "password", "passwd"}


def parse_task_yaml(text: str) -> TaskSpec:
    """A task from the text of its YAML file; TaskConfigError names the first wrong key."""
    if len(text.encode()) > MAX_YAML_BYTES:
        raise TaskConfigError(f"task file larger than {MAX_YAML_BYTES} bytes")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TaskConfigError(f"not valid YAML: {e}") from None
    return parse_task(doc)


def parse_task(doc: Any) -> TaskSpec:
    """A task from plain data (parsed YAML or JSON)."""
    m = _mapping(doc, "", _TOP_KEYS)
    name = _text(m, "name", required=True)
    if not TASK_NAME.fullmatch(name):
        raise TaskConfigError("want a letter then up to 47 letters, digits, '_' or '-'", key="name")
    task_mode = _choice(m, "task-mode", TASK_MODES, "all")
    shard_mode = _choice(m, "shard-mode", SHARD_MODES, "")
    meta_schema = _identifier(m, "meta-schema", "dm_meta")
    target = _endpoint(m.get("target"), "target", required=True)
    assert target is not None
    sources = _sources(m.get("sources"))
    bal = _block_allow_list(m.get("block-allow-list"))
    routes = _routes(m.get("routes"))
    safe_mode = _bool(m, "safe-mode", False)
    loader = _mapping(m.get("loader", {}), "loader", {"chunk-rows"})
    syncer = _mapping(m.get("syncer", {}), "syncer", {"batch"})
    chunk_rows = _int(loader, "chunk-rows", 5000, 1, 1_000_000, "loader.chunk-rows")
    batch_rows = _int(syncer, "batch", 500, 1, 100_000, "syncer.batch")
    return TaskSpec(
        name=name, target=target, sources=sources, task_mode=task_mode, shard_mode=shard_mode,
        meta_schema=meta_schema, block_allow_list=bal, routes=routes, safe_mode=safe_mode,
        chunk_rows=chunk_rows, batch_rows=batch_rows, raw=dict(m),
    )  # fmt: skip


def _mapping(value: Any, key: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TaskConfigError(f"want a mapping, got {_kind(value)}", key=key or "(document)")
    for k in value:
        where = f"{key}.{k}" if key else str(k)
        if not isinstance(k, str):
            raise TaskConfigError("keys must be strings", key=where)
        if k in _CREDENTIAL_KEYS:
            raise TaskConfigError(
                "credentials never go into a task file: MySQL accounts come from the settings "
                "(ORC_MYSQL_USER / ORC_MYSQL_PASSWORD)",
                key=where,
            )
        if k not in allowed:
            near = _near(k, allowed)
            hint = f" (did you mean {near!r}?)" if near else ""
            raise TaskConfigError(
                f"unknown key{hint}; known keys: {', '.join(sorted(allowed))}", key=where
            )
    return value


def _near(word: str, choices: set[str]) -> str | None:
    normal = word.replace("_", "-").lower()
    for c in choices:
        if c == normal or c.rstrip("s") == normal.rstrip("s"):
            return c
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _text(m: Mapping[str, Any], key: str, *, required: bool = False, where: str = "") -> str:
    full = f"{where}.{key}" if where else key
    if key not in m or m[key] is None:
        if required:
            raise TaskConfigError("is required", key=full)
        return ""
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TaskConfigError(f"want a string, got {_kind(value)}", key=full)
    return str(value)


def _choice(m: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(m, key) if key in m else default
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise TaskConfigError(f"unknown value {value!r}: want one of {shown}", key=key)
    return value


def _identifier(m: Mapping[str, Any], key: str, default: str, where: str = "") -> str:
    value = _text(m, key, where=where) or default
    if not IDENTIFIER.fullmatch(value):
        raise TaskConfigError(
            f"{value!r} is not a plain identifier (letters, digits, '_', '$', '-', at most 64)",
            key=f"{where}.{key}" if where else key,
        )
    return value


def _bool(m: Mapping[str, Any], key: str, default: bool) -> bool:
    if key not in m:
        return default
    if not isinstance(m[key], bool):
        raise TaskConfigError(f"want true or false, got {_kind(m[key])}", key=key)
    return bool(m[key])


def _int(m: Mapping[str, Any], key: str, default: int, lo: int, hi: int, full: str) -> int:
    if key not in m:
        return default
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise TaskConfigError(f"want a whole number from {lo} to {hi}", key=full)
    return int(value)


def _endpoint(value: Any, key: str, *, required: bool) -> Endpoint | None:
    if value is None:
        if required:
            raise TaskConfigError("is required: {host: ..., port: ...}", key=key)
        return None
    m = _mapping(value, key, _ENDPOINT_KEYS)
    host = _text(m, "host", required=True, where=key)
    if not HOST.fullmatch(host):
        raise TaskConfigError(f"malformed host {host!r}", key=f"{key}.host")
    port = m.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise TaskConfigError("want a port number from 1 to 65535", key=f"{key}.port")
    return Endpoint(host, port)


def _sources(value: Any) -> tuple[SourceSpec, ...]:
    if not isinstance(value, list) or not value:
        raise TaskConfigError("want a non-empty list of sources", key="sources")
    out: list[SourceSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        key = f"sources[{i}]"
        m = _mapping(item, key, _SOURCE_KEYS)
        sid = _text(m, "source-id", required=True, where=key)
        if not SOURCE_ID.fullmatch(sid):
            raise TaskConfigError(
                f"malformed source id {sid!r}: want keyspace/shard (commerce/-80) or a name",
                key=f"{key}.source-id",
            )
        if sid in seen:
            raise TaskConfigError(f"source {sid!r} is listed twice", key=f"{key}.source-id")
        seen.add(sid)
        endpoint = _endpoint(m.get("from"), f"{key}.from", required=False)
        if endpoint is not None and "/" in sid:
            raise TaskConfigError(
                "a source with `from` is an external server; its id must not look like a "
                "shard (keyspace/shard)",
                key=f"{key}.source-id",
            )
        types = _tablet_types(m.get("tablet-types"), f"{key}.tablet-types")
        if "tablet-types" in m and "/" not in sid:
            raise TaskConfigError("only a shard source has tablet types", key=f"{key}.tablet-types")
        out.append(SourceSpec(sid, endpoint, types, _text(m, "gtid", where=key)))
    return tuple(out)


def _tablet_types(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_TABLET_TYPES
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise TaskConfigError("want a list like replica,primary", key=key)
    out: list[str] = []
    for t in items:
        t = str(t).strip()
        if t not in TABLET_TYPES:
            raise TaskConfigError(f"unknown tablet type {t!r}: want replica, rdonly or primary",
                                  key=key)  # fmt: skip
        if t not in out:
            out.append(t)
    return tuple(out)


def _patterns(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TaskConfigError(f"want a list of names or patterns, got {_kind(value)}", key=key)
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, str) or not PATTERN.fullmatch(p):
            raise TaskConfigError(f"malformed pattern {p!r}", key=f"{key}[{i}]")
        out.append(p)
    return tuple(out)


def _table_refs(value: Any, key: str) -> tuple[TableRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TaskConfigError(f"want a list of {{db-name, tbl-name}}, got {_kind(value)}", key=key)
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        m = _mapping(item, where, _TABLE_REF_KEYS)
        db, tbl = _text(m, "db-name", required=True, where=where), _text(m, "tbl-name", where=where)
        for k, p in (("db-name", db), ("tbl-name", tbl or "*")):
            if not PATTERN.fullmatch(p):
                raise TaskConfigError(f"malformed pattern {p!r}", key=f"{where}.{k}")
        out.append(TableRef(db, tbl or "*"))
    return tuple(out)


def _block_allow_list(value: Any) -> BlockAllowList:
    if value is None:
        return BlockAllowList()
    m = _mapping(value, "block-allow-list", _BAL_KEYS)
    return BlockAllowList(
        do_dbs=_patterns(m.get("do-dbs"), "block-allow-list.do-dbs"),
        ignore_dbs=_patterns(m.get("ignore-dbs"), "block-allow-list.ignore-dbs"),
        do_tables=_table_refs(m.get("do-tables"), "block-allow-list.do-tables"),
        ignore_tables=_table_refs(m.get("ignore-tables"), "block-allow-list.ignore-tables"),
    )


def _routes(value: Any) -> tuple[Route, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TaskConfigError(f"want a list of routes, got {_kind(value)}", key="routes")
    out = []
    for i, item in enumerate(value):
        key = f"routes[{i}]"
        m = _mapping(item, key, _ROUTE_KEYS)
        sp = _text(m, "schema-pattern", required=True, where=key)
        tp = _text(m, "table-pattern", where=key)
        ts = _identifier(m, "target-schema", "", where=key) if m.get("target-schema") else ""
        tt = _text(m, "target-table", where=key)
        if not ts:
            raise TaskConfigError("is required", key=f"{key}.target-schema")
        for k, p in (("schema-pattern", sp), ("table-pattern", tp or "*")):
            if not PATTERN.fullmatch(p):
                raise TaskConfigError(f"malformed pattern {p!r}", key=f"{key}.{k}")
        if tt and not IDENTIFIER.fullmatch(tt):
            raise TaskConfigError(f"{tt!r} is not a plain identifier", key=f"{key}.target-table")
        if tt and not tp:
            raise TaskConfigError(
                "a target-table needs a table-pattern (which tables go there)",
                key=f"{key}.target-table",
            )
        out.append(Route(i, sp, tp, ts, tt))
    return tuple(out)
