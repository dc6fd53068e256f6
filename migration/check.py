"""check-task: everything about a task that can be known before it starts, checked at once.

The checks run against the real servers and report every problem they find (not the first),
each naming the key, source or table concerned:

- the target answers, is not one of the sources, and our account may create and write;
- every source resolves (shard in the topology, registered source, or `from`), answers, logs
  binlogs in ROW format with full row images and column metadata and GTIDs, and our account may
  read tables and the binlog;
- every migrated table has a primary key or a NOT NULL unique key;
- every route matches at least one migrated table, and no table is claimed by two routes;
- a target table fed by several upstream tables (a merge) has a shard-mode, and its upstream
  tables have the same columns.

`start-task` runs the same checks first and starts nothing if any fails.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass, field

from migration.context import Credentials
from migration.errors import TaskConfigError
from migration.schema import list_tables, table_info
from migration.sources import SourceServer, resolve_source
from migration.spec import SourceSpec, TaskSpec
from migration.store import MigrationStore
from mysqlctl.errors import MysqlError
from mysqlctl.session import Session, open_session
from topo.errors import TopoError
from topo.store import TopoStore

SOURCE_PRIVILEGES = ("SELECT", "REPLICATION SLAVE")
TARGET_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX")
CHECK_TIMEOUT_S = 20.0


@dataclass
class CheckReport:
    problems: list[TaskConfigError] = field(default_factory=list)
    # target "db.table" -> upstream "source:db.table" routed there
    targets: dict[str, list[str]] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def target_counts(self) -> dict[str, int]:
        return {t: len(ups) for t, ups in self.targets.items()}

    def add(self, message: str, key: str) -> None:
        self.problems.append(TaskConfigError(message, key=key))

    def to_dict(self) -> dict[str, object]:
        return {
            "result": self.ok,
            "msg": "check-task passed" if self.ok else f"{len(self.problems)} problem(s) found",
            "checks": [{"key": p.key, "message": p.message} for p in self.problems],
            "targets": {t: sorted(u) for t, u in sorted(self.targets.items())},
            "servers": self.servers,
        }


async def check_task(
    spec: TaskSpec, topo: TopoStore, mstore: MigrationStore, creds: Credentials
) -> CheckReport:
    report = CheckReport()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await _check(spec, topo, mstore, creds, report)
    except TimeoutError:
        report.add(f"the checks did not finish within {CHECK_TIMEOUT_S:g}s", "(check-task)")
    return report


async def _check(
    spec: TaskSpec, topo: TopoStore, mstore: MigrationStore, creds: Credentials, report: CheckReport
) -> None:
    t = spec.target
    servers: dict[str, SourceServer] = {}
    for i, s in enumerate(spec.sources):
        key = f"sources[{i}]"
        try:
            servers[s.source_id] = await resolve_source(topo, mstore, s)
        except TaskConfigError as e:
            report.add(e.message, f"{key}.source-id")
        except (TopoError, MysqlError, Exception) as e:
            report.add(f"cannot resolve source {s.source_id}: {e}", f"{key}.source-id")
    report.servers = {sid: srv.describe() for sid, srv in servers.items()}
    for sid, srv in servers.items():
        if (srv.host, srv.port) == (t.host, t.port):
            report.add(f"the target is source {sid}'s own server", "target")
    try:
        async with await open_session(creds.params(t.host, t.port, query_timeout=5)) as ts:
            missing = _missing(await _grants(ts), TARGET_PRIVILEGES)
            if missing:
                report.add(
                    f"{creds.user} lacks {', '.join(missing)} on *.* at the target {t.address}",
                    "target",
                )
    except MysqlError as e:
        report.add(f"target {t.address} unreachable: {e}", "target")
    route_used: set[int] = set()
    columns: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
    for i, src in enumerate(spec.sources):
        found = servers.get(src.source_id)
        if found is None:
            continue
        try:
            params = creds.params(found.host, found.port, query_timeout=5)
            async with await open_session(params) as ss:
                await _check_source(spec, src, i, ss, report, route_used, columns)
        except MysqlError as e:
            report.add(f"source {src.source_id} at {found.describe()} unreachable: {e}",
                       f"sources[{i}]")  # fmt: skip
    for r in spec.routes:
        if r.index not in route_used and len(servers) == len(spec.sources):
            pattern = f"{r.schema_pattern}.{r.table_pattern or '*'}"
            report.add(f"matches no migrated table on any source ({pattern})", r.key)
    for target, ups in sorted(report.targets.items()):
        if len(ups) > 1 and not spec.shard_mode:
            report.add(
                f"{len(ups)} upstream tables are merged into {target} ({', '.join(sorted(ups))})"
                ": set shard-mode: pessimistic",
                "shard-mode",
            )
        shapes = columns.get(target, {})
        if len(set(shapes.values())) > 1:
            first, *rest = sorted(shapes.items())
            for up, cols in rest:
                if cols != first[1]:
                    report.add(
                        f"merged into {target}, {up} has columns {list(cols)} but {first[0]} "
                        f"has {list(first[1])}",
                        up,
                    )


async def _check_source(
    spec: TaskSpec,
    s: SourceSpec,
    i: int,
    ss: Session,
    report: CheckReport,
    route_used: set[int],
    columns: dict[str, dict[str, tuple[str, ...]]],
) -> None:
    key = f"sources[{i}]"
    rows = await ss.fetch_all(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', "
        "'binlog_row_image', 'binlog_row_metadata', 'gtid_mode', 'version')"
    )
    v = {str(r["Variable_name"]).lower(): str(r["Value"]) for r in rows}
    mariadb = "mariadb" in v.get("version", "").lower()
    wants = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL",
             "binlog_row_metadata": "FULL"}  # fmt: skip
    if not mariadb:
        wants["gtid_mode"] = "ON"
    for name, want in wants.items():
        have = v.get(name)
        if (have or "").upper() != want:
            report.add(f"source {s.source_id} has {name}={have or '(not set)'}; needs {want}", key)
    missing = _missing(await _grants(ss), SOURCE_PRIVILEGES)
    if missing:
        report.add(f"the account lacks {', '.join(missing)} on *.* at source {s.source_id}", key)
    for db, table in await list_tables(ss):
        if not spec.allows(db, table):
            continue
        hits = spec.matching_routes(db, table)
        if len(hits) > 1:
            report.add(
                f"{db}.{table} of {s.source_id} is claimed by {', '.join(h.key for h in hits)}",
                f"{db}.{table}",
            )
        route_used.update(h.index for h in hits)
        info = await table_info(ss, db, table)
        if not info.key:
            report.add(
                f"{db}.{table} of {s.source_id} has no primary key or NOT NULL unique key "
                "(rows could not be found again for UPDATE/DELETE)",
                f"{db}.{table}",
            )
        tdb, ttable = spec.route(db, table)
        target = f"{tdb}.{ttable}"
        up = f"{s.source_id}:{db}.{table}"
        report.targets.setdefault(target, []).append(up)
        columns[target][up] = info.columns


async def _grants(s: Session) -> str:
    rows = await s.fetch_rows("SHOW GRANTS")
    return "\n".join(str(r[0]) for r in rows)


def _missing(grants: str, needed: tuple[str, ...]) -> list[str]:
    """Privileges of `needed` not granted globally (`ON *.*`) in these SHOW GRANTS lines."""
    have: set[str] = set()
    for line in grants.splitlines():
        m = re.match(r"GRANT (.+?) ON \*\.\* TO", line)
        if not m:
            continue
        privs = {p.strip().upper() for p in m.group(1).split(",")}
        if "ALL PRIVILEGES" in privs or "ALL" in privs:
            return []
        have |= privs
    return [p for p in needed if p not in have]
