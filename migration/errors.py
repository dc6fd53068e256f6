"""The errors of the migration engine: one root, one class per way a caller reacts.

A subtask decides on the class: a `SourceUnavailableError` or `TargetUnavailableError` is retried
with backoff and clears by itself; a `PausingError` (divergence, key conflict, a DDL that needs
coordination) pauses the subtask until a person resumes it; a `FencedError` means another worker
owns the subtask now and this one must stop without writing. The HTTP API maps the classes to
status codes in one place, like the topology and workflow errors.
"""

from __future__ import annotations

from collections.abc import Sequence


class MigrationError(Exception):
    """Root of every error raised by the migration engine."""

    code = "MIGRATION_ERROR"


class TaskConfigError(MigrationError):
    """A task file or command argument that can never work; `key` names the culprit
    (`routes[1].target-table`, `sources[0].source-id`, `shard_db_1.orders`)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class CheckFailedError(MigrationError):
    """check-task found problems; `problems` lists every one (never only the first)."""

    code = "FAILED_PRECONDITION"

    def __init__(self, problems: Sequence[TaskConfigError]) -> None:
        lines = "; ".join(str(p) for p in problems)
        super().__init__(f"{len(problems)} problem(s): {lines}")
        self.problems = list(problems)


class NoSuchTaskError(MigrationError):
    code = "NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} does not exist")
        self.name = name


class TaskExistsError(MigrationError):
    code = "ALREADY_EXISTS"

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} already exists (stop-task it first, or pick a new name)")
        self.name = name


class SourceUnavailableError(MigrationError):
    """No usable server for a source right now (all its tablets down, external host refused).
    Retried with backoff; the subtask resumes by itself when the source is back."""

    code = "SOURCE_UNAVAILABLE"


class SourceBehindError(SourceUnavailableError):
    """The server a subtask would read lacks its checkpoint, but the shard's primary has it:
    a replica that has not caught up yet (right after a reparent). Retried like an outage."""

    code = "SOURCE_BEHIND"


class SourceSwitchedError(SourceUnavailableError):
    """A source's address now answers as another server than the one the sync run checked
    (an upstream primary switched behind a VIP): the run ends, and the next one checks the new
    server against the checkpoint before reading from it. Retried at once."""

    code = "SOURCE_SWITCHED"


class TargetUnavailableError(MigrationError):
    """The downstream server does not answer; retried with backoff like a source."""

    code = "TARGET_UNAVAILABLE"


class FencedError(MigrationError):
    """This worker's binding of the subtask is no longer the current one (another worker took
    it over): the downstream refused our checkpoint update, so nothing of ours was written."""

    code = "ABORTED"


class PausingError(MigrationError):
    """A problem that needs a decision: the subtask pauses with this error until resumed."""

    code = "FAILED_PRECONDITION"


class DivergenceError(PausingError):
    """The server a subtask would resume on lacks transactions the target already has (the
    shard lost them in a failover): resuming would leave rows downstream that upstream lost."""

    def __init__(self, message: str, *, checkpoint: str, server_position: str) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.server_position = server_position


class KeyConflictError(PausingError):
    """Two sources merged into one target table hold the same key: applying would overwrite a
    row of another shard, so the subtask pauses instead, naming the key and both sources."""

    def __init__(self, message: str, *, table: str, key: str, sources: Sequence[str]) -> None:
        super().__init__(message)
        self.table = table
        self.key = key
        self.sources = list(sources)


class DdlNeedsCoordinationError(PausingError):
    """A DDL reached a table merged from several upstream tables: applying it at the first
    shard would break the rows still coming from the others (shard-mode coordination)."""


class UnsupportedDdlError(PausingError):
    """A DDL statement whose table names this engine cannot rewrite safely."""
