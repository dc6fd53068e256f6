"""Data migration commands, with DM's kebab-case names and JSON shapes (`result`, `msg`,
per-source entries). Each handler is one call into `migration.tasks.TaskOps`."""

from __future__ import annotations

from typing import Any

from orchestrator.commands.registry import Arg, ArgumentError, CommandContext, command

TASK_FILE = Arg("task", "task_file", "the task file (YAML; the CLI reads FILE and sends its text)",
                required=True, cli="positional")  # fmt: skip
TASK_NAME = Arg("name", "task_name", "the task's name", required=True, cli="positional")
SOURCES = Arg("source", "source_list", "only these sources (repeatable; default all of the "
              "task's)")  # fmt: skip


@command(
    "check-task", "Check a task file against the servers, without starting anything.",
    TASK_FILE,
    description="Reports every problem at once: unknown keys, routes that match nothing or "
    "overlap, tables without a key, sources without ROW binlogs with full images and column "
    "metadata, missing privileges, unreachable servers. Exit code 1 when any check fails.",
    examples=("check-task task.yaml",),
    read=True,
)  # fmt: skip
async def _check_task(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from migration.errors import CheckFailedError

    _spec, report = await ctx.service.migration.check(a["task"])
    if not report.ok:
        raise CheckFailedError(report.problems)
    return report.to_dict()


@command(
    "start-task", "Check a task, then start it: full load and/or binlog sync per source.",
    TASK_FILE,
    Arg("remove_meta", "bool", "forget the task's checkpoints on the target first (start "
        "over)", default=False),
    description="The task is stored in etcd; the leader binds each source's subtask to a live "
    "worker. Restarting any process loses nothing.",
    examples=("start-task task.yaml", "start-task task.yaml --remove-meta"),
)  # fmt: skip
async def _start_task(ctx: CommandContext, a: dict[str, Any]) -> Any:
    return await ctx.service.migration.start(a["task"], remove_meta=a["remove_meta"])


@command(
    "stop-task", "Stop a task and forget it, or (--source) remove sources from it.",
    TASK_NAME,
    Arg("source", "source_list", "only remove these sources from the task (repeatable); a "
        "sharding DDL lock stops waiting for them"),
    description="Checkpoints stay on the target: start-task with the same name resumes.",
    examples=("stop-task merge-orders", "stop-task merge-orders --source commerce/80-"),
)  # fmt: skip
async def _stop_task(ctx: CommandContext, a: dict[str, Any]) -> Any:
    if a["source"]:
        return await ctx.service.migration.stop_sources(a["name"], list(a["source"]))
    return await ctx.service.migration.stop(a["name"])


@command("pause-task", "Pause a task's subtasks (all, or those of --source).",
         TASK_NAME, SOURCES,
         examples=("pause-task merge-orders", "pause-task merge-orders --source commerce/-80"))  # fmt: skip
async def _pause_task(ctx: CommandContext, a: dict[str, Any]) -> Any:
    return await ctx.service.migration.pause(a["name"], list(a["source"] or ()))


@command("resume-task", "Resume paused subtasks (all, or those of --source).",
         TASK_NAME, SOURCES,
         description="Also the way out of a subtask paused by an error (divergence, key "
         "conflict), once its cause is dealt with.",
         examples=("resume-task merge-orders", "resume-task merge-orders --source commerce/-80"))  # fmt: skip
async def _resume_task(ctx: CommandContext, a: dict[str, Any]) -> Any:
    return await ctx.service.migration.resume(a["name"], list(a["source"] or ()))


@command(
    "query-status", "Every task's status, or one task's per subtask: worker, stage, unit, "
    "progress, positions, lag, safe mode, last error.",
    Arg("name", "task_name", "the task's name (default: every task)", cli="positional"),
    examples=("query-status", "query-status merge-orders"),
    read=True,
)  # fmt: skip
async def _query_status(ctx: CommandContext, a: dict[str, Any]) -> Any:
    return await ctx.service.migration.query_status(a["name"])


@command(
    "operate-source", "Register (create), remove (stop) or list (show) external sources.",
    Arg("op", "source_op", "create, stop or show", required=True, cli="positional"),
    Arg("source_id", "source_id", "the source's id (required for create and stop)",
        cli="either"),
    Arg("host", "host", "the server's host (create)"),
    Arg("port", "port", "the server's MySQL port (create)"),
    description="A registered source is used in task files by its id, without `from`. Shards "
    "of the topology are sources already (`keyspace/shard`).",
    examples=("operate-source create legacy-1 --host 10.0.0.5 --port 3306",
              "operate-source show", "operate-source stop legacy-1"),
)  # fmt: skip
async def _operate_source(ctx: CommandContext, a: dict[str, Any]) -> Any:
    if a["op"] == "create" and not (a["source_id"] and a["host"] and a["port"]):
        raise ArgumentError("operate-source create needs source_id, host and port",
                            field="source_id")  # fmt: skip
    return await ctx.service.migration.operate_source(a["op"], a["source_id"], a["host"], a["port"])


@command(
    "show-ddl-locks", "Sharding DDL locks: ID, owner, DDLs, synced and unsynced sources, state.",
    Arg("task", "task_name", "only this task's locks", cli="positional"),
    Arg("source", "source_list", "only locks involving these sources (repeatable)"),
    examples=("show-ddl-locks", "show-ddl-locks merge-orders --source commerce/-80"),
    read=True,
)  # fmt: skip
async def _show_ddl_locks(ctx: CommandContext, a: dict[str, Any]) -> Any:
    return await ctx.service.migration.show_ddl_locks(a["task"], list(a["source"] or ()))


@command(
    "unlock-ddl-lock", "Unlock a sharding DDL lock by hand (the seed's manual cases; audited).",
    Arg("lock", "lock_id", "the lock's ID, as show-ddl-locks gives it", required=True,
        cli="positional"),
    Arg("owner", "source_id", "a synced source to execute the DDL instead of the owner"),
    Arg("force_remove", "bool", "remove the lock even if its DDL fails; held sources resume "
        "without it", default=False),
    description="Locks unlock themselves when every source reaches the DDL, also across "
    "crashes and leader changes; a source removed from the task stops counting. This is for "
    "the rest: an unsynced source that will never come (its unsynced sources are dropped), an "
    "owner gone for good (--owner), a DDL that cannot be applied (--force-remove). Every call "
    "is written to the audit log (GET /api/v1/audit).",
    examples=("unlock-ddl-lock 'merge-orders-`shard_db`.`shard_table`'",
              "unlock-ddl-lock 'merge-orders-`shard_db`.`shard_table`' --owner commerce/80-"),
)  # fmt: skip
async def _unlock_ddl_lock(ctx: CommandContext, a: dict[str, Any]) -> Any:
    by = ctx.service.settings.instance_id + (f" for {ctx.peer}" if ctx.peer else "")
    return await ctx.service.migration.unlock_ddl_lock(
        a["lock"], owner=a["owner"], force_remove=a["force_remove"], by=by
    )
