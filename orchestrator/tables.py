"""Tables for people: how `orchestrator ctl` prints a read's result with `--format table` (the
default on a terminal). One renderer per read command, from the same JSON the API returns;
times are ISO 8601 (UTC), and nothing is ever truncated (an error message is the one thing an
on-call person must read whole). Standard library only: the CLI must start fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def iso(epoch: Any) -> str:
    if not isinstance(epoch, int | float) or epoch <= 0:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns, headers first; every cell whole."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _threads(t: dict[str, Any]) -> str:
    if t.get("io_running") is None and t.get("sql_running") is None:
        return "-"
    io = t.get("io_state") or ("Yes" if t.get("io_running") else "No")
    sql = "Yes" if t.get("sql_running") else "No"
    if io == "No" and sql == "No":
        return "stopped"
    return f"{io}/{sql}"


def tablets(result: dict[str, Any]) -> str:
    rows = []
    for t in result.get("tablets", []):
        problems = "; ".join(f"{p['kind']}: {p['detail']}" for p in t.get("problems", []))
        if t.get("maintenance") and t["maintenance"].get("active"):
            problems = problems or "maintenance"
        state = "up" if t.get("healthy") else ("down" if t.get("healthy") is False else "?")
        if t.get("healthy") is False and t.get("error"):
            state = f"down: {t['error']}"
        rows.append([
            t["alias"], f"{t['keyspace']}/{t['shard']}", t["type"], t.get("address"),
            state, t.get("read_only"), t.get("source"), _threads(t), t.get("lag_seconds"),
            t.get("position"), problems or "-",
        ])  # fmt: skip
    return table(
        ["ALIAS", "SHARD", "TYPE", "HOST:PORT", "STATE", "READ-ONLY", "SOURCE", "IO/SQL",
         "LAG", "GTID", "PROBLEMS"], rows,
    )  # fmt: skip


def keyspaces(result: dict[str, Any]) -> str:
    rows = [
        [k["name"], k.get("durability_policy"),
         "on" if k.get("auto_recovery", True) else "paused", ", ".join(k.get("shards", []))]
        for k in result.get("keyspaces", [])
    ]  # fmt: skip
    return table(["KEYSPACE", "DURABILITY", "AUTO-RECOVERY", "SHARDS"], rows)


def shards(result: dict[str, Any]) -> str:
    rows = [
        [f"{s['keyspace']}/{name}", s.get("primary_alias"), s.get("is_primary_serving"),
         iso((s.get("primary_term_start_time") or 0) / 1e9)]
        for name, s in sorted(result.get("shards", {}).items())
    ]  # fmt: skip
    return table(["SHARD", "PRIMARY", "SERVING", "PRIMARY SINCE"], rows)


def locks(result: dict[str, Any]) -> str:
    rows = [
        [f"{li['keyspace']}/{li['shard']}", li.get("action"), li.get("holder"),
         li.get("workflow_id") or "-", iso(li.get("started_at")),
         f"{li['age_s']:.1f}s" if isinstance(li.get("age_s"), int | float) else "-",
         li.get("reason") or "-"]
        for li in result.get("locks", [])
    ]  # fmt: skip
    if not rows:
        return "no shard lock is held"
    return table(["SHARD", "ACTION", "HOLDER", "WORKFLOW", "SINCE", "AGE", "REASON"], rows)


def recoveries(result: dict[str, Any]) -> str:
    out = []
    if result.get("note"):
        out.append(f"note: {result['note']}")
    shard_rows = [
        [key, s.get("paused") or "no", "; ".join(s.get("problems", [])) or "-",
         iso((s.get("last_failover") or {}).get("time")),
         f"{s['failover_block_left_s']:g}s" if s.get("failover_block_left_s") else "-"]
        for key, s in result.get("shards", {}).items()
    ]  # fmt: skip
    out.append(table(["SHARD", "PAUSED", "PROBLEMS", "LAST FAILOVER", "FAILOVER BLOCKED FOR"],
                     shard_rows))  # fmt: skip
    rows = [
        [iso(e.get("time")), f"{e['keyspace']}/{e['shard']}", e.get("problem"),
         e.get("tablet") or "-", e.get("action"), e.get("result"),
         e.get("reason") or e.get("detail") or "-"]
        for e in result.get("recoveries", [])
    ]  # fmt: skip
    out.append("")
    out.append(table(["TIME", "SHARD", "DETECTED", "TABLET", "ACTION", "RESULT", "WHY"], rows)
               if rows else "no recovery recorded")  # fmt: skip
    return "\n".join(out)


def workflows(result: dict[str, Any]) -> str:
    rows = [
        [w["id"], w.get("action"), f"{w['keyspace']}/{w['shard']}", w.get("status"),
         iso(w.get("created_at")), iso(w.get("updated_at")), w.get("error") or "-"]
        for w in result.get("workflows", [])
    ]  # fmt: skip
    return table(["ID", "ACTION", "SHARD", "STATUS", "CREATED", "UPDATED", "ERROR"], rows)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "GetTablets": tablets,
    "GetKeyspaces": keyspaces,
    "FindAllShardsInKeyspace": shards,
    "ShowLocks": locks,
    "GetRecoveries": recoveries,
    "GetWorkflows": workflows,
}


def render(command: str, result: Any) -> str | None:
    """The table for a read command's result, or None when it has no table (print JSON)."""
    fn = RENDERERS.get(command)
    if fn is None or not isinstance(result, dict):
        return None
    return fn(result)
