"""Workflow errors. Each carries a code in the spirit of Vitess's (FAILED_PRECONDITION, ABORTED,
...), says which tablet blocked progress and why, and maps to one HTTP status in the API."""

from __future__ import annotations


class WorkflowError(Exception):
    """Root of workflow failures."""

    code = "UNKNOWN"

    def __init__(self, message: str, *, tablet: str | None = None) -> None:
        super().__init__(message)
        self.tablet = tablet


class InvalidArgumentError(WorkflowError):
    """The request can never succeed as given (unknown tablet in this shard, bad option mix)."""

    code = "INVALID_ARGUMENT"


class PreconditionError(WorkflowError):
    """The shard is not in a state where this is safe (shard has a primary, elect unreachable,
    no promotable candidate...). Nothing was changed."""

    code = "FAILED_PRECONDITION"


class AbortedError(WorkflowError):
    """The workflow started changing things, could not finish, and undid what it had done."""

    code = "ABORTED"


class ActiveReparentsDisabledError(PreconditionError):
    """`disable_active_reparents` is set: PRS, ERS and InitShardPrimary are refused."""


class DeadlineExceededError(WorkflowError):
    """The caller's deadline passed before the workflow could start acting (its client gave
    up): nothing was changed, and nothing will be."""

    code = "DEADLINE_EXCEEDED"


class PartialFailureError(WorkflowError):
    """The new primary is in place but some step after it failed (a replica not repointed...).
    The shard has one primary; the message lists what needs attention."""

    code = "PARTIAL_FAILURE"
