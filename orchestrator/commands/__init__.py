"""The vtctl-style commands, by subject, registered in one table (`registry.COMMANDS`).

`registry` holds the vocabulary (Arg, Command, parse_args, the `command` decorator,
CommandContext); each subject module registers its commands when imported. The imports below
fix the order in which commands are listed (`ctl --help`, `GET /api/v1/commands`, OpenAPI).
"""

# The subject modules, in listing order (each import registers its commands).
# isort: off
from orchestrator.commands import topology  # noqa: F401
from orchestrator.commands import reparent  # noqa: F401
from orchestrator.commands import replication  # noqa: F401
from orchestrator.commands import reads  # noqa: F401
from orchestrator.commands import locks  # noqa: F401
from orchestrator.commands import migration  # noqa: F401
from orchestrator.commands import recovery  # noqa: F401

from orchestrator.commands import members  # noqa: F401
# New subjects go here, one line each, after the ones above.
# isort: on

from orchestrator.commands.registry import (
    ALIAS_PATTERN,
    COMMANDS,
    DURABILITY_POLICIES,
    DURATION_PATTERN,
    HOST_PATTERN,
    KEYSPACE_PATTERN,
    KEYSPACE_SHARD_PATTERN,
    KS_SHARD,
    MAX_DURATION_S,
    NON_PRIMARY_TYPES,
    SHARD_PATTERN,
    TABLET,
    UID_PATTERN,
    WAIT_REPLICAS,
    Arg,
    ArgumentError,
    Command,
    CommandContext,
    Handler,
    ProgressFn,
    UnknownCommandError,
    command,
    get_command,
    parse_args,
    parse_duration,
)

__all__ = [
    "ALIAS_PATTERN",
    "COMMANDS",
    "DURABILITY_POLICIES",
    "DURATION_PATTERN",
    "HOST_PATTERN",
    "KEYSPACE_PATTERN",
    "KEYSPACE_SHARD_PATTERN",
    "KS_SHARD",
    "MAX_DURATION_S",
    "NON_PRIMARY_TYPES",
    "SHARD_PATTERN",
    "TABLET",
    "UID_PATTERN",
    "WAIT_REPLICAS",
    "Arg",
    "ArgumentError",
    "Command",
    "CommandContext",
    "Handler",
    "ProgressFn",
    "UnknownCommandError",
    "command",
    "get_command",
    "parse_args",
    "parse_duration",
]
